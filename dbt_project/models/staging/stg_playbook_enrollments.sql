with

source as (

    select * from {{ source('raw', 'playbook_enrollments') }}

),

renamed as (

    select
        cast(account_id as varchar) as account_id,
        cast(playbook as varchar) as playbook,
        cast(status as varchar) as status,
        cast(enrolled_at as timestamp) as enrolled_at,
        cast(due_at as timestamp) as due_at,
        cast(completed_at as timestamp) as completed_at

    from source

)

select * from renamed

with

source as (

    select * from {{ source('raw', 'milestones') }}

),

renamed as (

    select
        cast(account_id as varchar) as account_id,
        cast(milestone as varchar) as milestone,
        cast(achieved_at as timestamp) as achieved_at

    from source

)

select * from renamed

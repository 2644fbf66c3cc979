with

source as (

    select * from {{ source('raw', 'accounts') }}

),

renamed as (

    select
        cast(account_id as varchar) as account_id,
        cast(name as varchar) as name,
        cast(mrr as double) as mrr,
        cast(amount as double) as amount,
        cast(created_at as timestamp) as created_at,
        cast(next_billing_on as date) as next_billing_on,
        cast(licenses as integer) as licenses,
        cast(stage as varchar) as stage,
        cast(status as varchar) as status

    from source

)

select * from renamed

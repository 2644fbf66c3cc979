with

source as (

    select * from {{ source('raw', 'users') }}

),

renamed as (

    select
        cast(user_id as varchar) as user_id,
        cast(account_id as varchar) as account_id,
        cast(email as varchar) as email,
        cast(first_name as varchar) as first_name,
        cast(last_name as varchar) as last_name,
        cast(created_at as timestamp) as created_at,
        cast(last_seen_at as timestamp) as last_seen_at

    from source

)

select * from renamed

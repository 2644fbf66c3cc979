with

source as (

    select * from {{ source('raw', 'events') }}

),

renamed as (

    select
        cast(event_id as varchar) as event_id,
        cast(user_id as varchar) as user_id,
        cast(account_id as varchar) as account_id,
        cast(event_name as varchar) as event_name,
        cast(properties as json) as properties,
        cast(occurred_at as timestamp) as occurred_at

    from source

)

select * from renamed

with

source as (

    select * from {{ source('raw', 'outcomes') }}

),

renamed as (

    select
        cast(account_id as varchar) as account_id,
        cast(outcome as varchar) as outcome,
        cast(met_at as timestamp) as met_at

    from source

)

select * from renamed

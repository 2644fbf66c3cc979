with

source as (

    select * from {{ source('raw', 'account_team') }}

),

renamed as (

    select
        cast(account_id as varchar) as account_id,
        cast(role as varchar) as role,
        cast(member as varchar) as member

    from source

)

select * from renamed

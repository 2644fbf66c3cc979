with

source as (

    select * from {{ source('raw', 'email_suppressions') }}

),

renamed as (

    select
        cast(email as varchar) as email,
        cast(reason as varchar) as reason,
        cast(suppressed_at as timestamp) as suppressed_at

    from source

)

select * from renamed

with

source as (

    select * from {{ source('raw', 'custom_attributes') }}

),

renamed as (

    select
        cast(entity_type as varchar) as entity_type,
        cast(entity_id as varchar) as entity_id,
        cast(name as varchar) as name,
        cast(value as varchar) as value

    from source

)

select * from renamed

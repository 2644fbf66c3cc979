with

source_attributes as (

    select * from {{ ref('stg_custom_attributes') }}

),

journey_attributes as (

    select * from {{ source('journey_state', 'attributes') }}

),

-- A value written by a journey action replaces the source value of the same name
-- (a cleared attribute is a journey row with a null value).
final as (

    select entity_type, entity_id, name, value, 'journey' as origin
    from journey_attributes

    union all

    select s.entity_type, s.entity_id, s.name, s.value, 'source' as origin
    from source_attributes as s
    left join journey_attributes as j
        on j.entity_type = s.entity_type
        and j.entity_id = s.entity_id
        and j.name = s.name
    where j.name is null

)

select * from final

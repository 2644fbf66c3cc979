with

transitions as (

    select * from {{ source('journey_state', 'transitions') }}

),

final as (

    select
        run_id,
        as_of,
        journey_id,
        entity_type,
        entity_id,
        enrollment_id,
        event,
        from_status,
        to_status,
        reason,
        occurred_at
    from transitions

)

select * from final

with

actions as (

    select * from {{ source('journey_state', 'actions') }}

),

final as (

    select
        action_key,
        enrollment_id,
        journey_id,
        entity_type,
        entity_id,
        step_id,
        action_type,
        due_at,
        executed_at,
        status,
        reason,
        attempts,
        error,
        next_attempt_at
    from actions

)

select * from final

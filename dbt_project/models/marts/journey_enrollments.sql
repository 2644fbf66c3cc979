with

enrollments as (

    select * from {{ source('journey_state', 'enrollments') }}

),

final as (

    select
        enrollment_id,
        journey_id,
        journey_version,
        entity_type,
        entity_id,
        enrolled_at,
        status,
        variant,
        split_path,
        goal_achieved_at,
        ended_at,
        end_reason,
        cursor_step_id as next_step_id,
        cursor_at as next_step_at
    from enrollments

)

select * from final

with

enrollments as (

    select * from {{ source('journey_state', 'enrollments') }}

),

final as (

    select
        journey_id,
        count(*) as enrolled,
        sum(case when status = 'active' then 1 else 0 end) as active,
        sum(case when status = 'completed' then 1 else 0 end) as completed,
        sum(case when goal_achieved_at is not null then 1 else 0 end) as goal_achieved,
        sum(case when status = 'unenrolled' then 1 else 0 end) as unenrolled,
        sum(case when goal_achieved_at is not null then 1 else 0 end) * 1.0 / count(*) as goal_rate,
        median(case when goal_achieved_at is not null
                    then date_diff('second', enrolled_at, goal_achieved_at) / 3600.0 end) as median_hours_to_goal
    from enrollments
    group by journey_id

)

select * from final

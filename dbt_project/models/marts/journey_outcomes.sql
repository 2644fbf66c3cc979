with

enrollments as (

    select * from {{ source('journey_state', 'enrollments') }}

),

-- one row per journey, variant (treated / holdout) and split path
by_group as (

    select
        journey_id,
        variant,
        split_path,
        count(*) as enrolled,
        sum(case when status = 'active' then 1 else 0 end) as active,
        sum(case when status = 'completed' then 1 else 0 end) as completed,
        sum(case when goal_achieved_at is not null then 1 else 0 end) as goal_achieved,
        sum(case when status = 'unenrolled' then 1 else 0 end) as unenrolled,
        sum(case when goal_achieved_at is not null then 1 else 0 end) * 1.0 / count(*) as goal_rate,
        median(case when goal_achieved_at is not null
                    then date_diff('second', enrolled_at, goal_achieved_at) / 3600.0 end) as median_hours_to_goal
    from enrollments
    group by journey_id, variant, split_path

),

holdout as (

    select
        journey_id,
        count(*) as holdout_enrolled,
        sum(case when goal_achieved_at is not null then 1 else 0 end) * 1.0 / count(*) as holdout_goal_rate
    from enrollments
    where variant = 'holdout'
    group by journey_id

),

final as (

    select
        g.*,
        h.holdout_goal_rate,
        -- lift of treated over holdout, in goal-rate points and relative to the holdout rate
        case when g.variant = 'treated' then g.goal_rate - h.holdout_goal_rate end as lift,
        case when g.variant = 'treated' and h.holdout_goal_rate > 0
             then g.goal_rate / h.holdout_goal_rate - 1 end as relative_lift
    from by_group as g
    left join holdout as h using (journey_id)

)

select * from final

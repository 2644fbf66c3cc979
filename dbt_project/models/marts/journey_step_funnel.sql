with

steps as (

    select * from {{ source('journey_state', 'journey_steps') }}

),

journeys as (

    select * from {{ source('journey_state', 'journeys') }}

),

actions as (

    select * from {{ source('journey_state', 'actions') }}

),

-- the steps of each journey's current version, with what happened at each action step (all versions)
final as (

    select
        s.journey_id,
        s.step_id,
        s.ordinal,
        s.kind,
        s.action_type,
        count(a.action_key) as reached,
        count(case when a.status = 'done' then 1 end) as done,
        count(case when a.status in ('pending', 'sending') then 1 end) as pending,
        count(case when a.status = 'failed' then 1 end) as failed,
        count(case when a.status = 'cancelled' then 1 end) as cancelled
    from steps as s
    inner join journeys as j
        on j.journey_id = s.journey_id and j.version = s.version
    left join actions as a
        on a.journey_id = s.journey_id and a.step_id = s.step_id
    group by s.journey_id, s.step_id, s.ordinal, s.kind, s.action_type

)

select * from final

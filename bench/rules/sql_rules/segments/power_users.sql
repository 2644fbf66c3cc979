-- entity: user
-- description: Users with 12+ events in the last 7 days (a raw SQL segment).
select user_id as entity_id
from {{ ref('stg_events') }}
where occurred_at > {{ as_of() }} - interval 7 day
  and occurred_at <= {{ as_of() }}
group by user_id
having count(*) >= 12

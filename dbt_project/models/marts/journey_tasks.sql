select * from {{ source('journey_state', 'tasks') }}

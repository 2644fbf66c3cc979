select * from {{ source('journey_state', 'email_outbox') }}

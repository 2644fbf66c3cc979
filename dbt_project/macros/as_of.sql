{#- The run's logical time T, for raw SQL segments: `where created_at > {{ as_of() }} - interval 7 day`. -#}
{% macro as_of() -%}
(select as_of from {{ source('journey_state', 'run_context') }})
{%- endmacro %}

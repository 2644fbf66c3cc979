with

source as (

    select * from {{ source('raw', 'subscriptions') }}

),

renamed as (

    select
        cast(subscription_id as varchar) as subscription_id,
        cast(account_id as varchar) as account_id,
        cast(status as varchar) as status,
        cast(amount as double) as amount,
        cast(mrr as double) as mrr,
        cast(product_name as varchar) as product_name,
        cast(plan_name as varchar) as plan_name,
        cast(plan_quantity as integer) as plan_quantity,
        cast(plan_unit_price as double) as plan_unit_price,
        cast(activated_on as date) as activated_on,
        cast(cancelled_on as date) as cancelled_on,
        cast(created_on as date) as created_on,
        cast(next_billing_on as date) as next_billing_on,
        cast(ends_on as date) as ends_on,
        cast(starts_on as date) as starts_on,
        cast(trial_ends_on as date) as trial_ends_on,
        cast(trial_starts_on as date) as trial_starts_on

    from source

)

select * from renamed

// @generated automatically by Diesel CLI.

diesel::table! {
    accounts (account_id) {
        account_id -> Text,
        link_id -> Text,
    }
}

diesel::table! {
    fintoc_key_series (idempotency_key) {
        idempotency_key -> Text,
        spent -> BigInt,
        updated_at_ms -> BigInt,
    }
}

diesel::table! {
    idempotency_keys (idempotency_key) {
        idempotency_key -> Text,
        token_sha256 -> Text,
        refresh_type -> Text,
        refresh_intent_id -> Text,
        joined_existing -> Bool,
        created_at_ms -> BigInt,
    }
}

diesel::table! {
    intent_accounts (refresh_intent_id, account_id) {
        refresh_intent_id -> Text,
        account_id -> Text,
        result_sequence -> Nullable<BigInt>,
    }
}

diesel::table! {
    links (link_id) {
        link_id -> Text,
        token_sha256 -> Text,
        rejected_at_ms -> Nullable<BigInt>,
        resolved_at_ms -> BigInt,
    }
}

diesel::table! {
    log_horizon (singleton) {
        singleton -> Integer,
        pruned_through_ms -> BigInt,
    }
}

diesel::table! {
    refresh_intents (id) {
        id -> Text,
        link_id -> Text,
        refresh_type -> Text,
        status -> Text,
        mfa_widget_token -> Text,
        created_at_ms -> BigInt,
        completed_at_ms -> Nullable<BigInt>,
        completed_sequence -> Nullable<BigInt>,
        reconciled_at_ms -> Nullable<BigInt>,
    }
}

diesel::table! {
    results (sequence) {
        sequence -> BigInt,
        account_id -> Text,
        link_id -> Text,
        refresh_intent_id -> Text,
        status -> Text,
        new_movements -> BigInt,
        public_error -> Text,
        event_id -> Text,
        occurred_at_ms -> BigInt,
        committed_at_ms -> BigInt,
        completes_intent -> Bool,
    }
}

diesel::table! {
    webhook_events (id) {
        id -> BigInt,
        event_key -> Text,
        event_type -> Nullable<Text>,
        disposition -> Text,
        received_at_ms -> BigInt,
        body -> Binary,
    }
}

diesel::joinable!(intent_accounts -> refresh_intents (refresh_intent_id));

diesel::allow_tables_to_appear_in_same_query!(
    accounts,
    fintoc_key_series,
    idempotency_keys,
    intent_accounts,
    links,
    log_horizon,
    refresh_intents,
    results,
    webhook_events,
);

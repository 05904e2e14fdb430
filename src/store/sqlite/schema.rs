// @generated automatically by Diesel CLI.

diesel::table! {
    accounts (account_id) {
        account_id -> Text,
        link_id -> Text,
    }
}

diesel::table! {
    fetch_jobs (result_sequence) {
        result_sequence -> BigInt,
        account_id -> Text,
        link_id -> Text,
        event_id -> Text,
        new_movements -> BigInt,
        occurred_at_ms -> BigInt,
        attempts -> Integer,
        due_at_ms -> BigInt,
        lease_owner -> Text,
        lease_until_ms -> BigInt,
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
    link_tokens (link_id) {
        link_id -> Text,
        key_id -> Text,
        nonce -> Binary,
        ciphertext -> Binary,
        given_at_ms -> BigInt,
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
    movements (account_id, movement_id) {
        account_id -> Text,
        movement_id -> Text,
        link_id -> Text,
        post_date -> Text,
        body -> Text,
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
        detail -> Text,
        fetches_movements -> Bool,
        trace_context -> Text,
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
    fetch_jobs,
    fintoc_key_series,
    idempotency_keys,
    intent_accounts,
    link_tokens,
    links,
    log_horizon,
    movements,
    refresh_intents,
    results,
    webhook_events,
);

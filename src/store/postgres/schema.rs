// @generated automatically by Diesel CLI.

diesel::table! {
    accounts (account_id) {
        account_id -> Text,
        link_id -> Text,
    }
}

diesel::table! {
    creates_in_flight (link_id) {
        link_id -> Text,
        expires_at_ms -> Int8,
        holder -> Text,
    }
}

diesel::table! {
    fetch_jobs (result_sequence) {
        result_sequence -> Int8,
        account_id -> Text,
        link_id -> Text,
        event_id -> Text,
        new_movements -> Int8,
        occurred_at_ms -> Int8,
        attempts -> Int4,
        due_at_ms -> Int8,
        lease_owner -> Text,
        lease_until_ms -> Int8,
    }
}

diesel::table! {
    fintoc_key_series (idempotency_key) {
        idempotency_key -> Text,
        spent -> Int8,
        updated_at_ms -> Int8,
    }
}

diesel::table! {
    idempotency_keys (idempotency_key) {
        idempotency_key -> Text,
        token_sha256 -> Text,
        refresh_type -> Text,
        refresh_intent_id -> Text,
        joined_existing -> Bool,
        created_at_ms -> Int8,
    }
}

diesel::table! {
    intent_accounts (refresh_intent_id, account_id) {
        refresh_intent_id -> Text,
        account_id -> Text,
        result_sequence -> Nullable<Int8>,
    }
}

diesel::table! {
    leader_lease (singleton) {
        singleton -> Bool,
        holder -> Text,
        expires_at -> Timestamptz,
    }
}

diesel::table! {
    link_tokens (link_id) {
        link_id -> Text,
        key_id -> Text,
        nonce -> Bytea,
        ciphertext -> Bytea,
        given_at_ms -> Int8,
    }
}

diesel::table! {
    link_turns (token_sha256) {
        token_sha256 -> Text,
        holder -> Text,
        expires_at -> Timestamptz,
    }
}

diesel::table! {
    links (link_id) {
        link_id -> Text,
        token_sha256 -> Text,
        rejected_at_ms -> Nullable<Int8>,
        resolved_at_ms -> Int8,
    }
}

diesel::table! {
    log_counter (singleton) {
        singleton -> Bool,
        newest -> Int8,
        newest_ms -> Int8,
    }
}

diesel::table! {
    log_horizon (singleton) {
        singleton -> Bool,
        pruned_through_ms -> Int8,
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
        created_at_ms -> Int8,
        completed_at_ms -> Nullable<Int8>,
        completed_sequence -> Nullable<Int8>,
        reconciled_at_ms -> Nullable<Int8>,
    }
}

diesel::table! {
    results (sequence) {
        sequence -> Int8,
        account_id -> Text,
        link_id -> Text,
        refresh_intent_id -> Text,
        status -> Text,
        new_movements -> Int8,
        public_error -> Text,
        event_id -> Text,
        occurred_at_ms -> Int8,
        committed_at_ms -> Int8,
        completes_intent -> Bool,
        detail -> Text,
        fetches_movements -> Bool,
        trace_context -> Text,
    }
}

diesel::table! {
    webhook_events (id) {
        id -> Int8,
        event_key -> Text,
        event_type -> Nullable<Text>,
        disposition -> Text,
        received_at_ms -> Int8,
        body -> Bytea,
    }
}

diesel::joinable!(intent_accounts -> refresh_intents (refresh_intent_id));

diesel::allow_tables_to_appear_in_same_query!(
    accounts,
    creates_in_flight,
    fetch_jobs,
    fintoc_key_series,
    idempotency_keys,
    intent_accounts,
    leader_lease,
    link_tokens,
    link_turns,
    links,
    log_counter,
    log_horizon,
    movements,
    refresh_intents,
    results,
    webhook_events,
);

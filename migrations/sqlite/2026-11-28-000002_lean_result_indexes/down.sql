CREATE INDEX results_link ON results (link_id, sequence);
CREATE INDEX results_intent ON results (refresh_intent_id, sequence);

DROP TABLE fintoc_key_series;

DROP INDEX accounts_link;

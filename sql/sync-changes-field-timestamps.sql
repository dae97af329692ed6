-- The seed's generation of the sync server's event log (SPEC §2): per-field times in field_timestamps.
-- mana-ai never runs this against a real sync database; the tests use it to prove the runner still serves it.
CREATE TABLE IF NOT EXISTS sync_changes (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  app_id text NOT NULL,
  table_name text NOT NULL,
  record_id text NOT NULL,
  user_id text NOT NULL,
  op text NOT NULL CHECK (op IN ('insert', 'update', 'delete')),
  data jsonb,
  field_timestamps jsonb DEFAULT '{}',
  client_id text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  schema_version int NOT NULL DEFAULT 1,
  actor jsonb
);
CREATE INDEX IF NOT EXISTS sync_changes_user_app_created_idx ON sync_changes (user_id, app_id, created_at);
CREATE INDEX IF NOT EXISTS sync_changes_table_record_created_idx ON sync_changes (table_name, record_id, created_at);
CREATE INDEX IF NOT EXISTS sync_changes_user_app_table_created_idx ON sync_changes (user_id, app_id, table_name, created_at);
ALTER TABLE sync_changes ENABLE ROW LEVEL SECURITY;
ALTER TABLE sync_changes FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS sync_changes_user_isolation ON sync_changes;
CREATE POLICY sync_changes_user_isolation ON sync_changes
  USING (user_id = current_setting('app.current_user_id', true))
  WITH CHECK (user_id = current_setting('app.current_user_id', true));

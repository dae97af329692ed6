-- Today's sync server's event log (SPEC §2, §13; mana-sync's store/postgres.go since 2026-04-26):
-- per-field times in field_meta, plus origin and space_id, a fourth (partial) index and a read-only
-- policy for members of shared spaces. mana-ai never runs this against a real sync database; it is
-- the embedded default's table and the tests'. The seed's generation: sync-changes-field-timestamps.sql.
CREATE TABLE IF NOT EXISTS sync_changes (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  app_id text NOT NULL,
  table_name text NOT NULL,
  record_id text NOT NULL,
  user_id text NOT NULL,
  op text NOT NULL CHECK (op IN ('insert', 'update', 'delete')),
  data jsonb,
  field_meta jsonb DEFAULT '{}',
  client_id text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  schema_version int NOT NULL DEFAULT 1,
  actor jsonb,
  origin text,
  space_id text
);
CREATE INDEX IF NOT EXISTS sync_changes_user_app_created_idx ON sync_changes (user_id, app_id, created_at);
CREATE INDEX IF NOT EXISTS sync_changes_table_record_created_idx ON sync_changes (table_name, record_id, created_at);
CREATE INDEX IF NOT EXISTS sync_changes_user_app_table_created_idx ON sync_changes (user_id, app_id, table_name, created_at);
CREATE INDEX IF NOT EXISTS sync_changes_user_space_app_created_idx ON sync_changes (user_id, space_id, app_id, created_at)
  WHERE space_id IS NOT NULL;
ALTER TABLE sync_changes ENABLE ROW LEVEL SECURITY;
ALTER TABLE sync_changes FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS sync_changes_user_isolation ON sync_changes;
CREATE POLICY sync_changes_user_isolation ON sync_changes
  USING (user_id = current_setting('app.current_user_id', true))
  WITH CHECK (user_id = current_setting('app.current_user_id', true));
-- Members of a shared space read its rows; only their authors write them (the policies are OR-ed).
DROP POLICY IF EXISTS sync_changes_space_member_read ON sync_changes;
CREATE POLICY sync_changes_space_member_read ON sync_changes
  FOR SELECT
  USING (
    space_id IS NOT NULL
    AND space_id = ANY(string_to_array(coalesce(current_setting('app.current_user_space_ids', true), ''), ','))
  );

-- mana-ai: the operator's one-time grant for the runner's existing login role (SPEC §7).
-- Run by the database owner (the role that owns sync_changes), once per database; re-running is harmless:
--   psql "$OWNER_URL" -v runner_role=mana_ai_runner -f sql/runner-role.sql
-- Afterwards the runner role (NOSUPERUSER, NOBYPASSRLS) can:
--   * own schema mana_ai and create its own tables there (it cannot create schemas itself);
--   * read the mission rows (app_id 'ai', table 'aiMissions') of every user: discovery's one narrow path;
--   * read the agent rows (app_id 'ai', table 'agents') of every user: the same path, for agents (SPEC §14);
--   * read and insert every other sync_changes row only inside its per-user RLS scope
--     (set_config('app.current_user_id', <user>, true)); it can never UPDATE or DELETE a change.
\set ON_ERROR_STOP on
BEGIN;

CREATE SCHEMA IF NOT EXISTS mana_ai AUTHORIZATION :"runner_role";
ALTER SCHEMA mana_ai OWNER TO :"runner_role";

GRANT USAGE ON SCHEMA public TO :"runner_role";
REVOKE ALL ON TABLE public.sync_changes FROM :"runner_role";
GRANT SELECT, INSERT ON TABLE public.sync_changes TO :"runner_role";

-- Discovery reads mission rows across users; nothing else crosses the per-user policy.
DROP POLICY IF EXISTS mana_ai_runner_read_missions ON public.sync_changes;
CREATE POLICY mana_ai_runner_read_missions ON public.sync_changes
  AS PERMISSIVE FOR SELECT TO :"runner_role"
  USING (app_id = 'ai' AND table_name = 'aiMissions');

-- Incremental discovery ("mission rows newer than X"). None of the sync server's three indexes
-- leads with created_at for one app/table, and PostgreSQL 15 has no skip scan, so without this
-- every refresh would walk all mission history. A partial index: small, and it changes no data.
CREATE INDEX IF NOT EXISTS sync_changes_ai_missions_created_idx
  ON public.sync_changes (created_at, id)
  WHERE app_id = 'ai' AND table_name = 'aiMissions';

-- Agents (SPEC §14) are discovered and replayed like missions: the same narrow path, one more table.
DROP POLICY IF EXISTS mana_ai_runner_read_agents ON public.sync_changes;
CREATE POLICY mana_ai_runner_read_agents ON public.sync_changes
  AS PERMISSIVE FOR SELECT TO :"runner_role"
  USING (app_id = 'ai' AND table_name = 'agents');

-- Incremental agent discovery, for the same reason as the mission index above.
CREATE INDEX IF NOT EXISTS sync_changes_ai_agents_created_idx
  ON public.sync_changes (created_at, id)
  WHERE app_id = 'ai' AND table_name = 'agents';

COMMIT;

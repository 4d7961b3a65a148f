-- rollout.fleet: many rollouts, many engines, coordinated through etcd (fleet mode).
-- This file describes the design and gathers the parts: fleet.keys (layout, reads),
-- fleet.wire (redacted events), fleet.bundle, fleet.runner (one owned rollout),
-- fleet.agent, fleet.client (submit, list, commands, status); `rollout ctl --etcd` is in
-- cmd/ctl.lua.
--
-- Like Patroni for PostgreSQL, no consensus of our own: etcd (3.4, JSON gateway, through
-- rollout.etcd) holds every rollout, decides who drives it, and keeps its journal, so a
-- rollout outlives the machine that drove it.
--
-- Keys, under a prefix (default /rollout/):
--   rollouts/<id>/spec            the bundle: playbook file + the .lua files of its directory,
--                                 --set list, optional config and scenario, submitted_by/at
--   rollouts/<id>/owner           {agent, lease, host, pid, since}, bound to the owner's lease;
--                                 its create-revision is the owner's fencing token
--   rollouts/<id>/events/<seq>    the journal, one engine event per key (12-digit seq)
--   rollouts/<id>/status          a summary (state, stage, weights, owner), with every event
--   rollouts/<id>/done            the outcome, written with the outcome event
--   rollouts/<id>/commands/<key>  operator commands (rollout ctl); acks/<key> their answers
--   agents/<name>                 a live agent, bound to its lease
-- and three small indexes, so that an agent's periodic work is a few range calls, whatever
-- the number of rollouts:
--   active/<id>   from submit until the outcome (deleted in the outcome's transaction)
--   owners/<id>   a mirror of the owner key (same transaction, same lease)
--   index/<id>    every rollout ever submitted ({service, submitted_at}), for `rollout list`
--   inbox/<id>    a doorbell: a command is waiting (written with the command)
--
-- Ownership: an agent holds one lease (TTL, kept alive every TTL/3) for itself and every
-- rollout it drives. It takes an unowned active rollout with a create-revision-0
-- transaction on rollouts/<id>/owner; the revision of that transaction is its fencing
-- token. Every event it replicates is a transaction guarded by "owner's create-revision ==
-- token", and so is the check (rollout.etcd holds()) it makes before every router action:
-- a deposed owner can neither move traffic nor write the journal. Its lease ending (etcd
-- says so, or no keepalive answered for a whole TTL) cancels all its rollout tasks at once.
-- When etcd cannot be reached the owner pauses its rollouts (traffic stays where it is: no
-- router action can prove ownership), says so, keeps the events in a local backlog, and
-- resumes when etcd answers again with the lease still valid.
--
-- Takeover: the new owner reads the events from etcd, replays them with
-- rollout.journal.replay, and starts the engine with env.resume: the same stage, weights
-- re-verified on the router, the hold's remaining time, as a local resume does.
--
-- Error policy: bad arguments raise; etcd and file-system failures return nil, err; inside
-- a rollout's task, losing ownership raises "fleet: ... not the owner" to stop the engine
-- where it stands.
local journal = require("rollout.journal")
local keys = require("rollout.fleet.keys")
local wire = require("rollout.fleet.wire")
local bundle = require("rollout.fleet.bundle")
local runner = require("rollout.fleet.runner")
local agent = require("rollout.fleet.agent")
local client = require("rollout.fleet.client")

return {
  PREFIX = keys.PREFIX, TERMINAL = journal.TERMINAL, MAX_BUNDLE = bundle.MAX_BUNDLE,
  keys = keys.keys, valid_id = keys.valid_id, hostname = keys.hostname, range = keys.range,
  read_events = keys.read_events,
  encode = wire.encode, forget_redactions = wire.forget_redactions,
  bundle = bundle.bundle, materialize = bundle.materialize,
  new_runner = runner.new, agent = agent.agent,
  submit = client.submit, list = client.list, command = client.command, status = client.status,
}

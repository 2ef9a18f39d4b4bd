#!/usr/bin/python3
"""Writes the Grafana dashboards (dashboards/grafana/*.json) from the panel
lists below: one place to read what each dashboard shows, and JSON that stays
regular (stable uids, a Prometheus datasource variable, $__rate_interval in
every rate). tests/dashboards/ checks the committed JSON equals this output
and that every metric a panel queries is exported by running services.

    dashboards/generate.py            # rewrite dashboards/grafana/*.json
    dashboards/generate.py --check    # exit 1 if a committed file differs
"""
import json
import os
import sys

R = "$__rate_interval"


def rate(metric, by=""):
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (rate({metric}[{R}]))"


def quantile(q, histogram):
    return f"histogram_quantile({q}, sum by (le) (rate({histogram}_bucket[{R}])))"


# (title, unit, [(expr, legend)], description). Units are Grafana's.
OVERVIEW = [
    ("Jobs by state", "short", [("sum by (state) (interlace_controller_jobs)", "{{state}}")],
     "Jobs queued and running in the control plane."),
    ("Learner reward", "none", [("interlace_learner_reward", "{{instance}}")],
     "Mean reward of the last RL step's batch."),
    ("RL steps per second", "short", [(rate("interlace_learner_steps_total"), "steps/s")],
     "Optimizer steps across learners."),
    ("Trajectories trained per second", "short", [(rate("interlace_trajectories_trained_total"), "trained/s")], ""),
    ("Generated tokens per second", "short", [(rate("interlace_rollout_generated_tokens_total"), "tokens/s")],
     "Tokens the rollout workers generated into trajectories."),
    ("Services up", "short", [("sum by (job) (up{job=~\"interlace.*\"})", "{{job}}")],
     "Scrape targets answering, by scrape job."),
    ("Builds", "short", [("count by (version, commit, cuda, nccl) (interlace_build_info)",
                          "{{version}} {{commit}} cuda={{cuda}} nccl={{nccl}}")],
     "Which builds the services run."),
]

ROLLOUT = [
    ("Requests running and waiting", "short",
     [("sum(interlace_requests_running)", "running"), ("sum(interlace_requests_waiting)", "waiting")],
     "Sequences the engines decode now, and those queued for a slot."),
    ("Tokens per second", "short",
     [(rate("interlace_decode_tokens_total"), "decoded"), (rate("interlace_prompt_tokens_prefilled_total"), "prefilled")],
     "Decode and prefill throughput (prefix-cache hits are not prefilled)."),
    ("Prefix cache hit rate", "percentunit",
     [(f"{rate('interlace_cache_hit_tokens_total')} / {rate('interlace_cache_query_tokens_total')}", "hit rate")],
     "Prompt tokens served from the prefix cache (softmax KV blocks and lightning states together)."),
    ("Prefix cache by layer kind", "bytes",
     [("sum by (kind) (interlace_cache_held_bytes)", "{{kind}}")],
     "Softmax layers' KV blocks and lightning layers' state checkpoints, in one byte budget."),
    ("Prefix cache budget used", "percentunit", [("interlace_cache_usage_ratio", "{{instance}}")], ""),
    ("Cache evictions per second", "short", [(rate("interlace_cache_evictions_total", "reason"), "{{reason}}")], ""),
    ("Weights version per worker", "short", [("interlace_weights_version", "{{instance}}")],
     "The learner's published version is on the Learner dashboard."),
    ("Trajectories per second", "short",
     [(rate("interlace_trajectories_sent_total"), "sent"), (rate("interlace_trajectories_resent_total"), "resent"),
      (rate("interlace_trajectories_acked_total"), "acked"), (rate("interlace_trajectories_refused_total"), "refused")],
     "Resent: not acknowledged in time. Refused: the learner rejected them for good."),
    ("Trajectories in flight", "short", [("sum(interlace_trajectories_unacked)", "unacked")], ""),
    ("Time to first token", "s",
     [(quantile(0.5, "interlace_time_to_first_token_seconds"), "p50"),
      (quantile(0.99, "interlace_time_to_first_token_seconds"), "p99")],
     "From a request's submission to its first token: queueing and prefill (one request per agent turn)."),
    ("Inter-token latency", "s",
     [(quantile(0.5, "interlace_inter_token_latency_seconds"), "p50"),
      (quantile(0.99, "interlace_inter_token_latency_seconds"), "p99")], "Between consecutive decoded tokens."),
    ("Episode duration", "s",
     [(quantile(0.5, "interlace_episode_duration_seconds"), "p50"),
      (quantile(0.9, "interlace_episode_duration_seconds"), "p90")],
     "From an episode's batch starting to its trajectory being sent."),
    ("Requests finished and aborted per second", "short",
     [(rate("interlace_requests_finished_total"), "finished"), (rate("interlace_requests_aborted_total"), "aborted")],
     ""),
    ("Weight sync", "s",
     [(rate("interlace_weight_sync_seconds_total"), "seconds fetching per second"),
      (rate("interlace_weight_sync_failures_total"), "failed fetches/s")], ""),
    ("Frames rejected per second", "short",
     [(rate("interlace_frames_rejected_total", "instance, port"), "{{instance}} {{port}}")],
     "Malformed or unauthenticated frames, by port."),
    ("Speculative decoding", "short",
     [(f"{rate('interlace_spec_accepted_tokens_total')} / {rate('interlace_spec_draft_tokens_total')}", "acceptance"),
      (f"({rate('interlace_spec_accepted_tokens_total')} + {rate('interlace_spec_verifications_total')})"
       f" / {rate('interlace_spec_verifications_total')}", "tokens per verification")],
     "Draft tokens accepted over drafted, and tokens each verification forward emits (accepted drafts + 1); "
     "empty when no worker speculates (--speculate)."),
]

# The serving gateway (issue 21): what clients asked, where it went and what the caches gave.
SERVING = [
    ("Gateway requests per second", "reqps",
     [(rate("interlace_gateway_requests_total", "route, code"), "{{route}} {{code}}")],
     "OpenAI API requests answered, by route and status code."),
    ("Gateway requests in flight", "short",
     [("sum(interlace_gateway_requests_in_flight)", "in flight"), ("sum by (state) (interlace_gateway_workers)", "workers {{state}}")],
     "Requests being answered, and serving workers connected or not."),
    ("Routing decisions", "short", [(rate("interlace_gateway_routing_decisions_total", "reason"), "{{reason}}")],
     "Why each request went where it did: prefix_hit (the worker holding its prefix), least_loaded, load_imbalance, session."),
    ("Prefix held by the chosen worker", "short",
     [(quantile(0.5, "interlace_gateway_prefix_match_tokens"), "p50"),
      (quantile(0.9, "interlace_gateway_prefix_match_tokens"), "p90")],
     "Prompt tokens the gateway's index says the chosen worker holds."),
    ("Cached share of prompt tokens", "percentunit",
     [(f"{rate('interlace_gateway_cached_tokens_total')} / {rate('interlace_gateway_prompt_tokens_total')}", "cached")],
     "Prompt tokens the workers restored from their prefix/state caches (what clients see as cached_tokens)."),
    ("Index misses and client aborts", "short",
     [(rate("interlace_gateway_prefix_misses_total"), "index misses"), (rate("interlace_gateway_client_aborts_total"), "client aborts"),
      ("sum(interlace_gateway_prefix_index_entries)", "index entries")],
     "Requests whose worker restored less than the index expected (evicted or restarted), and clients that hung up."),
    ("Cache events from serving workers", "short", [(rate("interlace_gateway_cache_events_total", "kind"), "{{kind}}")],
     "Workers' cache changes the routing index applied; lost ones (a gap in a worker's sequence) clear its entries until a snapshot."),
]

LEARNER = [
    ("Loss", "none", [("interlace_learner_loss", "{{instance}}")], "Objective of the last step (with the KL term)."),
    ("Reward", "none", [("interlace_learner_reward", "{{instance}}")], ""),
    ("KL to the reference", "none", [("interlace_learner_kl", "{{instance}}")], "k3 estimate, per token."),
    ("Gradient norm", "none", [("interlace_learner_grad_norm", "{{instance}}")], "Before clipping."),
    ("Clip and correction fractions", "percentunit",
     [("interlace_learner_clip_fraction", "clipped"), ("interlace_learner_correction_fraction", "corrected")], ""),
    ("Staleness", "short", [("interlace_staleness_versions", "mean lag (versions)")],
     "How many versions behind the trained tokens were generated."),
    ("Rollout/learner log-prob mismatch", "none",
     [("interlace_logprob_abs_diff_mean", "mean |dlogp|"), ("interlace_logprob_abs_diff_max", "max |dlogp|"),
      ("interlace_mismatch_k3_kl", "k3 KL(rollout||learner)")],
     "The same tokens scored by the rollout engine and by the training kernels."),
    ("Probability agreement", "none",
     [("interlace_prob_pearson", "Pearson r"), ("interlace_token_mult_prob_error", "mean exp(|dlogp|)")], ""),
    ("RL step duration", "s",
     [(quantile(0.5, "interlace_rl_step_duration_seconds"), "p50"),
      (quantile(0.9, "interlace_rl_step_duration_seconds"), "p90")], ""),
    ("Trajectories received per second", "short",
     [(rate("interlace_trajectories_received_total"), "received"),
      (rate("interlace_trajectories_duplicate_total"), "duplicate"),
      (rate("interlace_trajectories_invalid_total"), "invalid"),
      (rate("interlace_trajectories_stale_total", "action"), "stale {{action}}")], ""),
    ("Tokens trained per second", "short", [(rate("interlace_learner_tokens_trained_total"), "tokens/s")], ""),
    ("Spool", "bytes", [("interlace_spool_bytes", "{{instance}}")], "Trajectories kept on disk until trained on."),
    ("Weights published", "short", [("interlace_weights_version_published", "{{instance}}")], ""),
    ("Stalled", "short", [("interlace_learner_stalled", "{{instance}}")], "1 while the step watchdog sees no step."),
]

CONTROL = [
    ("Jobs by state", "short", [("sum by (state) (interlace_controller_jobs)", "{{state}}")], ""),
    ("Runners by state", "short", [("max by (state) (interlace_controller_workers)", "{{state}}")],
     "Runners with a live heartbeat (every controller replica reports the same Redis)."),
    ("API requests per second", "reqps", [(rate("interlace_controller_requests_total", "route, code"),
                                           "{{route}} {{code}}")], ""),
    ("Redis up", "short", [("min(interlace_controller_redis_up)", "up")], "0 when a controller could not reach Redis."),
    ("Redis errors per second", "short", [(rate("interlace_controller_redis_errors_total"), "errors/s")], ""),
]

DASHBOARDS = [
    ("interlace-overview", "Interlace / Overview", OVERVIEW),
    ("interlace-rollout", "Interlace / Rollout and serving", ROLLOUT + SERVING),
    ("interlace-learner", "Interlace / Learner", LEARNER),
    ("interlace-control-plane", "Interlace / Control plane", CONTROL),
]

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def panel(i, title, unit, targets, description):
    return {
        "id": i + 1,
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": [{"refId": chr(ord("A") + j), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
                    for j, (expr, legend) in enumerate(targets)],
    }


def dashboard(uid, title, panels):
    return {
        "uid": uid,
        "title": title,
        "tags": ["interlace"],
        "timezone": "utc",
        "schemaVersion": 38,
        "version": 1,
        "editable": True,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [{"name": "datasource", "label": "Prometheus", "type": "datasource",
                                 "query": "prometheus", "current": {}, "hide": 0}]},
        "links": [{"type": "dashboards", "tags": ["interlace"], "asDropdown": True, "title": "Interlace"}],
        "panels": [panel(i, *p) for i, p in enumerate(panels)],
    }


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    check = "--check" in sys.argv[1:]
    stale = []
    for uid, title, panels in DASHBOARDS:
        path = os.path.join(here, "grafana", uid.removeprefix("interlace-") + ".json")
        text = json.dumps(dashboard(uid, title, panels), indent=2) + "\n"
        if check:
            try:
                same = open(path).read() == text
            except OSError:
                same = False
            if not same:
                stale.append(path)
        else:
            with open(path, "w") as f:
                f.write(text)
    if stale:
        print("generate.py: out of date (run dashboards/generate.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

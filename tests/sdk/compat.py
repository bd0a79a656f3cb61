#!/usr/bin/env python3
"""Drives the official Python client (kubiya-sdk 2.1.6, `kubiya.control_plane_client`) against a
running server through every method of its health, models, runtimes, skills, agents, context,
secrets, integrations, policies, workers, task_planning and graph services, and checks what comes back.

Run by scripts/sdk-compat.sh, which starts a fresh server and sets:
  KCP_SDK_BASE_URL   e.g. http://127.0.0.1:8001
  KCP_SDK_API_KEY    an admin key of the organization under test

Each step prints PASS or FAIL and the run goes on after a failure, so one run shows every
incompatibility; the exit code is 1 if any step failed. A step whose setup failed reports
FAIL (blocked) instead of a misleading error of its own.

The SDK returns `response.json()` unparsed, so list methods return our page
`{items, total, limit, offset}`; the checks read `items`.
"""

import json
import os
import sys
import traceback
import urllib.error
import urllib.request
import uuid

from kubiya.control_plane_client import ControlPlaneClient

BASE_URL = os.environ["KCP_SDK_BASE_URL"].rstrip("/")
API_KEY = os.environ["KCP_SDK_API_KEY"]
# Names are unique per run so the script also works against a server that has seen it before.
RUN = uuid.uuid4().hex[:8]

results = []  # (name, ok)


class Blocked(Exception):
    """A step could not run because an earlier step it needs failed."""


def check(name, fn):
    """Runs one step; prints PASS/FAIL and returns fn's result (None on failure)."""
    try:
        value = fn()
    except Blocked as e:
        print(f"FAIL  {name}: blocked: {e}", flush=True)
        results.append((name, False))
        return None
    except Exception as e:  # noqa: BLE001 - every failure is reported, then the run goes on
        print(f"FAIL  {name}: {type(e).__name__}: {e}", flush=True)
        if os.environ.get("KCP_SDK_VERBOSE"):
            traceback.print_exc()
        results.append((name, False))
        return None
    print(f"PASS  {name}", flush=True)
    results.append((name, True))
    return value


def need(value, what):
    """The result of an earlier step, or Blocked when that step failed."""
    if value is None:
        raise Blocked(f"needs {what}")
    return value


def expect(cond, message, got=None):
    if not cond:
        raise AssertionError(message if got is None else f"{message}; got {json.dumps(got, default=str)[:600]}")


def items_of(page, what):
    """The rows of one of our pages (what every SDK list method returns here)."""
    expect(isinstance(page, dict), f"{what}: expected a page object", page)
    for key in ("items", "total", "limit", "offset"):
        expect(key in page, f"{what}: page lacks '{key}'", page)
    expect(isinstance(page["items"], list), f"{what}: items is not a list", page)
    expect(page["total"] >= len(page["items"]), f"{what}: total < len(items)", page)
    return page["items"]


def status_of(exc):
    """The HTTP status behind an SDK error. Services wrap the client's APIError in their own
    error class (losing the status), so the original is found on the exception chain."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        code = getattr(exc, "status_code", None)
        if isinstance(code, int):
            return code
        exc = exc.__cause__ or exc.__context__
    return None


def expect_status(fn, statuses, what):
    """Calls fn and requires it to fail with one of `statuses` (an SDK error, no 5xx)."""
    try:
        got = fn()
    except Exception as e:  # noqa: BLE001
        code = status_of(e)
        expect(code in statuses, f"{what}: expected HTTP {sorted(statuses)}, got {code}: {e}")
        return code
    raise AssertionError(f"{what}: expected HTTP {sorted(statuses)}, but the call succeeded: {got!r:.300}")


def expect_deleted(answer, id_, what):
    expect(isinstance(answer, dict), f"{what}: delete answer is not an object", answer)
    expect(answer.get("deleted") is True, f"{what}: deleted is not true", answer)
    expect(str(answer.get("id")) == str(id_), f"{what}: delete answer id is not {id_}", answer)


def http(method, path, body=None):
    """A plain request for what the SDK cannot do (create secrets and integrations)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE_URL + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {API_KEY}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw.decode(errors="replace")


# Constructed as users do. On a 5xx the client retries (three times, with backoff) and then raises
# an APIError without a status code, which every status check here counts as a failure.
client = ControlPlaneClient(api_key=API_KEY, base_url=BASE_URL)

SONNET = "anthropic/claude-sonnet-4-5"

# ---------------------------------------------------------------- health


def health_check():
    h = client.health.check()
    expect(h.get("status") == "healthy", "health.check status", h)
    expect(bool(h.get("version")), "health.check has no version", h)
    return h


def health_ready():
    r = client.health.ready()
    expect(r.get("status") == "ready", "health.ready status", r)


def health_detailed():
    d = client.health.detailed()
    expect(d.get("status") in ("healthy", "degraded"), "health.detailed status", d)
    expect(isinstance(d.get("database"), dict) and d["database"].get("status"), "health.detailed database", d)


check("health.check", health_check)
check("health.ready", health_ready)
check("health.detailed", health_detailed)

# ---------------------------------------------------------------- models


def models_list_default():
    # The SDK's defaults: enabled_only=True, skip=0, limit=100.
    rows = items_of(client.models.list(), "models.list")
    expect(rows, "models.list is empty (a new organization has a seeded catalog)")
    expect(all(m["enabled"] for m in rows), "models.list(enabled_only=True) returned a disabled model", rows)
    values = [m["value"] for m in rows]
    expect(SONNET in values, f"models.list lacks {SONNET}", values)
    return {m["value"]: m for m in rows}


catalog = check("models.list (enabled_only, defaults)", models_list_default)


def models_list_provider():
    # The SDK docstring spells providers capitalized ('Anthropic'); the filter is case-insensitive.
    rows = items_of(client.models.list(provider="Anthropic"), "models.list(provider)")
    expect(rows, "models.list(provider='Anthropic') is empty")
    expect(all(m["provider"].lower() == "anthropic" for m in rows), "provider filter leaked", rows)


def models_list_runtime():
    rows = items_of(client.models.list(runtime="claude_code"), "models.list(runtime)")
    values = [m["value"] for m in rows]
    expect(SONNET in values, "runtime=claude_code lacks Sonnet", values)
    expect(all("claude_code" in m["compatible_runtimes"] for m in rows), "runtime filter leaked", rows)
    expect(not any(m["provider"] == "openai" for m in rows), "an OpenAI model claims claude_code", values)


def models_list_recommended():
    rows = items_of(client.models.list(recommended=True), "models.list(recommended)")
    expect(rows and all(m["recommended"] for m in rows), "recommended filter", rows)
    expect(SONNET in [m["value"] for m in rows], "Sonnet is not among the recommended", rows)


def models_list_paged():
    page = client.models.list(enabled_only=False, skip=1, limit=2)
    rows = items_of(page, "models.list(skip, limit)")
    expect(len(rows) <= 2 and page["limit"] == 2 and page["offset"] == 1, "skip/limit not honoured", page)
    expect(page["total"] >= 3, "total should count the whole catalog", page)


check("models.list provider='Anthropic'", models_list_provider)
check("models.list runtime='claude_code'", models_list_runtime)
check("models.list recommended=True", models_list_recommended)
check("models.list enabled_only=False skip=1 limit=2", models_list_paged)


def models_get_by_value():
    m = client.models.get(SONNET)
    expect(m.get("value") == SONNET and m.get("provider") == "anthropic", "models.get by value", m)
    return m


sonnet = check("models.get by value (with '/')", models_get_by_value)


def models_get_by_id():
    s = need(sonnet, "models.get by value")
    m = client.models.get(s["id"])
    expect(m.get("id") == s["id"] and m.get("value") == SONNET, "models.get by id", m)


check("models.get by id", models_get_by_id)
check("models.get unknown -> 404", lambda: expect_status(lambda: client.models.get("nobody/none"), {404}, "get"))


def models_get_default():
    m = client.models.get_default()
    expect(m.get("value") == SONNET and m.get("is_default") is True, "models.get_default", m)


check("models.get_default", models_get_default)

NEW_MODEL_VALUE = f"acme/sdk-model-{RUN}"


def models_create():
    m = client.models.create(
        {
            "value": NEW_MODEL_VALUE,
            "label": "SDK model",
            "provider": "acme",
            "model_type": "text-generation",
            "description": "created by the SDK compatibility test",
            "enabled": True,
            "compatible_runtimes": ["default"],
            "capabilities": {"tool_calling": True},
            "pricing": {"input_per_1k": 0.001, "output_per_1k": 0.002},
            "context_window": 32000,
            "base_url": "http://127.0.0.1:9/v1",
        }
    )
    expect(m.get("value") == NEW_MODEL_VALUE and m.get("provider") == "acme", "models.create echo", m)
    expect(m.get("context_window") == 32000 and m.get("is_default") is False, "models.create fields", m)
    uuid.UUID(m["id"])
    return m


new_model = check("models.create", models_create)


def models_update_by_id():
    m = need(new_model, "models.create")
    u = client.models.update(m["id"], {"label": "SDK model v2", "recommended": True})
    expect(u.get("label") == "SDK model v2" and u.get("recommended") is True, "PUT did not apply", u)
    # PUT is a partial update here (API §1): fields left out keep their value.
    expect(u.get("provider") == "acme" and u.get("context_window") == 32000, "PUT dropped other fields", u)


def models_update_by_value():
    need(new_model, "models.create")
    u = client.models.update(NEW_MODEL_VALUE, {"description": "updated by value"})
    expect(u.get("description") == "updated by value" and u.get("label") == "SDK model v2", "PUT by value", u)


check("models.update (PUT) by id", models_update_by_id)
check("models.update (PUT) by value", models_update_by_value)


def models_list_providers():
    # The SDK's signature says List[str]; like every collection here it is a page of strings.
    providers = items_of(client.models.list_providers(), "models.list_providers")
    expect(all(isinstance(p, str) for p in providers), "providers are not strings", providers)
    for p in ("anthropic", "openai"):
        expect(p in providers, f"providers lack {p}", providers)
    if new_model is not None:
        expect("acme" in providers, "providers lack the created model's provider", providers)


check("models.list_providers", models_list_providers)


def models_delete():
    m = need(new_model, "models.create")
    expect_deleted(client.models.delete(NEW_MODEL_VALUE), m["id"], "models.delete by value")
    expect_status(lambda: client.models.get(m["id"]), {404}, "get after delete")
    # A second model, deleted by id.
    other = client.models.create({"value": f"acme/other-{RUN}", "label": "Other", "provider": "acme"})
    expect_deleted(client.models.delete(other["id"]), other["id"], "models.delete by id")


check("models.delete (by value and by id)", models_delete)

# ---------------------------------------------------------------- runtimes


def runtimes_list():
    rows = items_of(client.runtimes.list(), "runtimes.list")
    ids = sorted(r["id"] for r in rows)
    expect(ids == ["claude_code", "default"], "runtimes.list ids", ids)


def runtimes_requirements():
    r = client.runtimes.get_requirements("claude_code")
    expect(isinstance(r.get("model_requirement"), dict), "requirements lack model_requirement", r)
    expect("anthropic" in [p.lower() for p in r["model_requirement"].get("supported_providers", [])],
           "claude_code should require an Anthropic model", r)
    d = client.runtimes.get_requirements("default")
    expect(isinstance(d.get("model_requirement"), dict), "default requirements", d)
    expect_status(lambda: client.runtimes.get_requirements("no_such_runtime"), {404}, "unknown runtime")


def runtimes_validate():
    ok = client.runtimes.validate({"runtime_type": "claude_code", "model_id": SONNET})
    expect(ok.get("valid") is True and ok.get("errors") == [], "claude_code + Sonnet should be valid", ok)
    bad = client.runtimes.validate({"runtime_type": "claude_code", "model_id": "openai/gpt-4.1"})
    expect(bad.get("valid") is False and bad.get("errors"), "claude_code + GPT should be invalid", bad)
    unknown = client.runtimes.validate({"runtime_type": "warp_drive"})
    expect(unknown.get("valid") is False, "an unknown runtime should be invalid", unknown)


check("runtimes.list", runtimes_list)
check("runtimes.get_requirements", runtimes_requirements)
check("runtimes.validate", runtimes_validate)

# ---------------------------------------------------------------- agents

AGENT_NAME = f"sdk-agent-{RUN}"


def agents_create():
    a = client.agents.create(
        {
            "name": AGENT_NAME,
            "description": "created by the SDK compatibility test",
            "system_prompt": "You are a careful SRE.",
            "runtime": "default",
            "model_id": SONNET,
            "llm_config": {"temperature": 0.2},
            "capabilities": ["kubernetes"],
        }
    )
    uuid.UUID(a["id"])
    expect(a.get("name") == AGENT_NAME and a.get("model_id") == SONNET, "agents.create echo", a)
    expect(a.get("runtime") == "default" and a.get("capabilities") == ["kubernetes"], "agents.create fields", a)
    return a


agent = check("agents.create", agents_create)


def agents_list():
    a = need(agent, "agents.create")
    rows = items_of(client.agents.list(), "agents.list")
    expect(a["id"] in [r["id"] for r in rows], "agents.list lacks the new agent", rows)
    mine = items_of(client.agents.list(status_filter=a["status"]), "agents.list(status_filter)")
    expect(a["id"] in [r["id"] for r in mine], "status_filter lost the agent", mine)
    expect(all(r["status"] == a["status"] for r in mine), "status_filter leaked", mine)
    paged = client.agents.list(skip=0, limit=1)
    expect(len(items_of(paged, "agents.list(limit=1)")) <= 1 and paged["limit"] == 1, "limit", paged)


def agents_get():
    a = need(agent, "agents.create")
    g = client.agents.get(a["id"])
    expect(g.get("id") == a["id"] and g.get("system_prompt") == "You are a careful SRE.", "agents.get", g)
    expect_status(lambda: client.agents.get(str(uuid.uuid4())), {404}, "unknown agent")


def agents_update():
    a = need(agent, "agents.create")
    u = client.agents.update(a["id"], {"description": "updated through the SDK (PATCH)"})
    expect(u.get("description") == "updated through the SDK (PATCH)", "agents.update did not apply", u)
    expect(u.get("name") == AGENT_NAME and u.get("model_id") == SONNET, "agents.update dropped fields", u)


def agents_execute():
    # A made-up worker queue: the SDK must get a clean client error (404 unknown queue), never
    # a 5xx.
    a = need(agent, "agents.create")
    body = {"prompt": "say hi", "worker_queue_id": str(uuid.uuid4())}
    expect_status(lambda: client.agents.execute(a["id"], body), {400, 404, 409, 422}, "agents.execute")


check("agents.list (+status_filter, limit)", agents_list)
check("agents.get", agents_get)
check("agents.update (PATCH)", agents_update)
check("agents.execute -> clean 4xx (unknown queue)", agents_execute)

# ---------------------------------------------------------------- skills

SKILL_NAME = f"sdk-shell-{RUN}"


def skills_create():
    s = client.skills.create(
        {
            "name": SKILL_NAME,
            "type": "shell",
            "description": "list files",
            "configuration": {"allowed_commands": ["ls"], "timeout": 30},
        }
    )
    uuid.UUID(s["id"])
    expect(s.get("name") == SKILL_NAME and s.get("type") == "shell", "skills.create echo", s)
    cfg = s.get("configuration") or {}
    expect(cfg.get("allowed_commands") == ["ls"] and cfg.get("timeout") == 30, "skills.create configuration", s)
    return s


skill = check("skills.create (shell)", skills_create)


def skills_list():
    s = need(skill, "skills.create")
    rows = items_of(client.skills.list(), "skills.list")
    expect(s["id"] in [r["id"] for r in rows], "skills.list lacks the new skill", rows)
    paged = client.skills.list(skip=0, limit=1)
    expect(len(items_of(paged, "skills.list(limit=1)")) <= 1 and paged["limit"] == 1, "limit", paged)


def skills_get():
    s = need(skill, "skills.create")
    g = client.skills.get(s["id"])
    expect(g.get("id") == s["id"] and g.get("name") == SKILL_NAME, "skills.get", g)


def skills_update():
    s = need(skill, "skills.create")
    u = client.skills.update(
        s["id"], {"description": "list and read files", "configuration": {"allowed_commands": ["ls", "cat"], "timeout": 60}}
    )
    expect(u.get("description") == "list and read files", "PUT did not apply the description", u)
    cfg = u.get("configuration") or {}
    expect(cfg.get("allowed_commands") == ["ls", "cat"] and cfg.get("timeout") == 60, "PUT configuration", u)
    expect(u.get("name") == SKILL_NAME and u.get("type") == "shell", "PUT dropped other fields", u)


def skills_associate():
    s = need(skill, "skills.create")
    a = need(agent, "agents.create")
    r = client.skills.associate(a["id"], [s["id"]])
    expect(r.get("entity_id") == a["id"] and s["id"] in r.get("skill_ids", []), "skills.associate answer", r)
    expect(str(r.get("entity_type", "")).rstrip("s") == "agent", "the entity was not inferred as an agent", r)
    g = client.agents.get(a["id"])
    expect(s["id"] in g.get("skill_ids", []), "the agent does not show the associated skill", g)
    again = client.skills.associate(a["id"], [s["id"]])
    expect(s["id"] in again.get("skill_ids", []), "associating twice should be harmless", again)
    expect_status(lambda: client.skills.associate(str(uuid.uuid4()), [s["id"]]), {404}, "unknown entity")


def skills_validate():
    ok = client.skills.validate({"type": "shell", "configuration": {"allowed_commands": ["ls"], "timeout": 30}})
    expect(ok.get("valid") is True and ok.get("errors") == [], "a good shell configuration", ok)
    bad = client.skills.validate({"type": "shell", "configuration": {"timeout": "soon"}})
    expect(bad.get("valid") is False and bad.get("errors"), "a bad shell configuration", bad)


def skills_delete():
    s = need(skill, "skills.create")
    expect_deleted(client.skills.delete(s["id"]), s["id"], "skills.delete")
    expect_status(lambda: client.skills.get(s["id"]), {404}, "get after delete")
    if agent is not None:
        g = client.agents.get(agent["id"])
        expect(s["id"] not in g.get("skill_ids", []), "the deleted skill is still on the agent", g)


check("skills.list", skills_list)
check("skills.get", skills_get)
check("skills.update (PUT)", skills_update)
check("skills.associate (agent)", skills_associate)
check("skills.validate", skills_validate)

# ---------------------------------------------------------------- context


def org_slug():
    status, me = http("GET", "/api/v1/auth/validate")
    expect(status == 200, "auth/validate", me)
    return me["slug"]


org = check("(setup) organization of the key", org_slug)


def context_references():
    """A context names knowledge items and graph nodes by id: one item and two nodes to name."""
    status, item = http("POST", "/api/v1/knowledge", {"title": "Runbook 42", "content": "Restart the pods."})
    expect(status == 201, "knowledge item for the context", item)
    status, nodes = http("POST", "/api/v1/graph/nodes", {"nodes": [
        {"external_id": name, "labels": ["Document"], "integration": "docs", "properties": {"name": name}}
        for name in ("runbook-42", "org-handbook")]})
    expect(status == 200, "graph nodes for the context", nodes)
    return item["id"], {n["external_id"]: n["id"] for n in nodes["nodes"]}


KNOWLEDGE, RESOURCES = check("(setup) a knowledge item and graph nodes", context_references) or (None, {})


def context_get_empty():
    a = need(agent, "agents.create")
    c = client.context.get("agent", a["id"])
    expect(c.get("entity_id") == a["id"], "context.get entity_id", c)
    for key in ("knowledge_uuids", "resource_ids", "policy_ids"):
        expect(c.get(key) == [], f"context.get {key} should start empty", c)
    expect(c.get("variables") == {}, "context.get variables should start empty", c)


def context_update():
    a = need(agent, "agents.create")
    body = {
        "knowledge_uuids": [KNOWLEDGE],
        "resource_ids": [RESOURCES.get("runbook-42")],
        "policy_ids": [],
        "variables": {"region": "eu-west-1", "owner": "sre"},
    }
    c = client.context.update("agent", a["id"], body)
    expect(c.get("knowledge_uuids") == [KNOWLEDGE] and c.get("resource_ids") == [RESOURCES.get("runbook-42")],
           "update", c)
    expect(c.get("variables") == {"region": "eu-west-1", "owner": "sre"}, "context.update variables", c)
    g = client.context.get("agent", a["id"])
    expect(g.get("variables", {}).get("region") == "eu-west-1", "context.get after update", g)
    expect(g.get("knowledge_uuids") == [KNOWLEDGE], "context.get after update", g)


def context_resolve():
    a = need(agent, "agents.create")
    o = need(org, "the organization slug")
    client.context.update("organization", o, {"variables": {"region": "us-east-1", "tier": "gold"},
                                              "resource_ids": [RESOURCES.get("org-handbook")]})
    r = client.context.resolve("agent", a["id"])
    v = r.get("variables", {})
    # Layers go organization -> ... -> agent; the later layer wins on a variable.
    expect(v.get("region") == "eu-west-1" and v.get("tier") == "gold" and v.get("owner") == "sre", "merge", r)
    expect(set(r.get("resource_ids", [])) == set(RESOURCES.values()), "resolved resource_ids", r)
    expect(KNOWLEDGE in r.get("knowledge_uuids", []), "resolved knowledge_uuids", r)
    expect(r.get("layers"), "resolve has no layers", r)


def context_delete():
    a = need(agent, "agents.create")
    d = client.context.delete("agent", a["id"])
    expect(d.get("deleted") is True and d.get("id") == f"agent/{a['id']}", "context.delete answer", d)
    g = client.context.get("agent", a["id"])
    expect(g.get("variables") == {} and g.get("knowledge_uuids") == [], "context remains after delete", g)
    if org is not None:
        od = client.context.delete("organization", org)
        expect(od.get("deleted") is True, "context.delete organization", od)
    expect_status(lambda: client.context.get("agent", str(uuid.uuid4())), {404}, "context of an unknown agent")


check("context.get (empty)", context_get_empty)
check("context.update (PUT)", context_update)
check("context.resolve", context_resolve)
check("context.delete", context_delete)

# ---------------------------------------------------------------- secrets

SECRET_NAME = f"SDK_COMPAT_{RUN.upper()}"
SECRET_VALUE = f"s3cr3t-{uuid.uuid4()}"


def secret_setup():
    # The SDK has no create method for secrets.
    status, body = http("POST", "/api/v1/secrets", {"name": SECRET_NAME, "value": SECRET_VALUE,
                                                     "description": "SDK compatibility test"})
    expect(status == 201, f"POST /api/v1/secrets answered {status}", body)
    return body


secret = check("(setup) POST /api/v1/secrets", secret_setup)


def secrets_list():
    need(secret, "the secret")
    page = client.secrets.list()
    rows = items_of(page, "secrets.list")
    expect(SECRET_NAME in [r.get("name") for r in rows], "secrets.list lacks the secret", rows)
    expect(SECRET_VALUE not in json.dumps(page), "secrets.list leaks a value", page)


def secrets_get_value():
    need(secret, "the secret")
    v = client.secrets.get_value(SECRET_NAME)
    expect(v.get("name") == SECRET_NAME and v.get("value") == SECRET_VALUE, "secrets.get_value", v)
    expect_status(lambda: client.secrets.get_value(f"MISSING_{RUN.upper()}"), {404}, "unknown secret")


check("secrets.list", secrets_list)
check("secrets.get_value", secrets_get_value)

# ---------------------------------------------------------------- integrations

GH_TOKEN = f"ghp_x{RUN}"


def integration_setup():
    # The SDK has no create method for integrations.
    status, body = http("POST", "/api/v1/integrations", {"name": f"sdk-github-{RUN}", "integration_type": "github",
                                                          "credentials": {"token": GH_TOKEN}})
    expect(status == 201, f"POST /api/v1/integrations answered {status}", body)
    return body


integration = check("(setup) POST /api/v1/integrations (github)", integration_setup)


def integrations_list():
    i = need(integration, "the integration")
    page = client.integrations.list()
    expect(i["id"] in [r["id"] for r in items_of(page, "integrations.list")], "list lacks the integration", page)
    expect(GH_TOKEN not in json.dumps(page), "integrations.list leaks credentials", page)
    connected = items_of(client.integrations.list(connected_only=True), "integrations.list(connected_only)")
    expect(i["id"] in [r["id"] for r in connected], "an integration with credentials is not connected", connected)


def integrations_get():
    i = need(integration, "the integration")
    g = client.integrations.get(i["id"])
    expect(g.get("id") == i["id"] and g.get("integration_type") == "github", "integrations.get", g)
    expect(GH_TOKEN not in json.dumps(g), "integrations.get leaks credentials", g)
    expect_status(lambda: client.integrations.get(str(uuid.uuid4())), {404}, "unknown integration")


def integrations_credentials():
    i = need(integration, "the integration")
    c = client.integrations.get_integration_credentials("github", i["id"])
    expect(c.get("token") == GH_TOKEN and c.get("env_var") == "GH_TOKEN", "github credentials", c)
    expect_status(lambda: client.integrations.get_integration_credentials("github", str(uuid.uuid4())), {404},
                  "credentials of an unknown integration")


def integrations_credentials_special():
    # For jira and github_app the SDK replaces the id with "0" (their integration is one per
    # organization in Kubiya's model), so the server must resolve "0" to the org's one.
    status, body = http("POST", "/api/v1/integrations", {"name": f"sdk-jira-{RUN}", "integration_type": "jira",
                                                          "credentials": {"token": f"jira-{RUN}"}})
    expect(status == 201, f"POST /api/v1/integrations (jira) answered {status}", body)
    c = client.integrations.get_integration_credentials("jira", body["id"])
    expect(c.get("token") == f"jira-{RUN}" and c.get("env_var") == "JIRA_TOKEN", "jira credentials via id 0", c)


check("integrations.list (+connected_only)", integrations_list)
check("integrations.get", integrations_get)
check("integrations.get_integration_credentials (github)", integrations_credentials)
check("integrations.get_integration_credentials (jira: SDK sends id 0)", integrations_credentials_special)

# ---------------------------------------------------------------- workflows (the DSL)


def workflows_import_dsl():
    from kubiya import dsl

    a = need(agent, "agents.create")
    wf = (
        dsl.workflow(f"sdk-dsl-{RUN}")
        .description("built by the SDK's DSL")
        .params(ENV="staging")
        .step("build", "make build ENV=${ENV}", callback=lambda s: s.output("BUILD_ID").retries(2))
        .step("review", callback=lambda s: s.agent(name=a["name"], message="Review build ${BUILD_ID}"))
    )
    code, w = http("POST", "/api/v1/workflows/import", wf.to_dict())
    expect(code == 201, f"workflows/import: HTTP {code}", w)
    steps = w.get("steps", [])
    expect([s.get("id") for s in steps] == ["build", "review"], "imported step ids", steps)
    expect(steps[0].get("command") == "make build ENV={{ inputs.ENV }}", "a param reference", steps[0])
    expect(steps[1].get("agent_id") == a["id"], "the agent found by name", steps[1])
    expect(steps[1].get("prompt") == "Review build {{ steps.build.output }}", "an output reference", steps[1])
    expect(steps[1].get("depends_on") == ["build"], "a chain", steps[1])
    bad = dsl.workflow(f"sdk-dsl-docker-{RUN}").step("d", callback=lambda s: s.docker(image="alpine", command="true"))
    code, err = http("POST", "/api/v1/workflows/import", bad.to_dict())
    expect(code == 422 and "docker" in json.dumps(err), f"an unsupported executor: HTTP {code}", err)
    http("DELETE", f"/api/v1/workflows/{w['id']}")


check("workflows import (kubiya.dsl)", workflows_import_dsl)

# ---------------------------------------------------------------- deletes last (others use them)

check("skills.delete", skills_delete)


# ---------------------------------------------------------------- policies

POLICY_NAME = f"sdk-no-prod-{RUN}"
NO_PROD = """package sdk.no_prod

deny contains "production is off limits" if input.resource == "cluster/prod"
"""


def policies_create():
    p = client.policies.create({"name": POLICY_NAME, "policy_content": NO_PROD, "description": "from the SDK",
                                "tags": ["sdk"]})
    uuid.UUID(p["id"])
    expect(p.get("name") == POLICY_NAME and p.get("version") == 1 and p.get("enabled") is True, "policies.create", p)
    # Rego that does not compile is refused with the line.
    expect_status(lambda: client.policies.create({"name": f"{POLICY_NAME}-bad", "policy_content": "package x\nallow if {"}),
                  {422}, "policies.create with broken Rego")
    return p


policy = check("policies.create (+422 on broken Rego)", policies_create)


def policies_list_get():
    p = need(policy, "policies.create")
    rows = items_of(client.policies.list(), "policies.list")
    expect(p["id"] in [r["id"] for r in rows], "policies.list lacks the policy", rows)
    g = client.policies.get(p["id"])
    expect(g.get("policy_content") == NO_PROD, "policies.get", g)
    expect_status(lambda: client.policies.get(str(uuid.uuid4())), {404}, "unknown policy")


def policies_update():
    p = need(policy, "policies.create")
    u = client.policies.update(p["id"], {"policy_content": NO_PROD + "\n# v2\n"})
    expect(u.get("version") == 2 and u.get("description") == "from the SDK", "policies.update (PUT)", u)


def policies_evaluate():
    p = need(policy, "policies.create")
    a = need(agent, "agents.create")
    status, assoc = http("POST", "/api/v1/policies/associations",
                         {"policy_id": p["id"], "entity_type": "agent", "entity_id": a["id"]})
    expect(status == 201, f"POST /api/v1/policies/associations answered {status}", assoc)
    denied = client.policies.evaluate(a["id"], "deploy", resource="cluster/prod")
    expect(denied.get("allowed") is False and denied.get("violations") == ["production is off limits"],
           "policies.evaluate (denied)", denied)
    allowed = client.policies.evaluate(a["id"], "deploy", resource={"cluster": "dev"})
    expect(allowed.get("allowed") is True and allowed.get("policies_evaluated") == 1, "policies.evaluate", allowed)
    expect_status(lambda: client.policies.evaluate(str(uuid.uuid4()), "deploy"), {404}, "evaluate unknown entity")


def policies_check_authorization():
    a = need(agent, "agents.create")
    no = client.policies.check_authorization(a["id"], "cluster/prod", "deploy")
    expect(no.get("authorized") is False and no.get("allowed") is False, "check_authorization (denied)", no)
    yes = client.policies.check_authorization(a["id"], "cluster/dev", "deploy")
    expect(yes.get("authorized") is True, "check_authorization (allowed)", yes)


def policies_health():
    code, h = http("GET", "/api/v1/policies/health")
    expect(code == 200 and h.get("status") == "healthy", "GET /policies/health", h)


def policies_delete():
    p = need(policy, "policies.create")
    expect_deleted(client.policies.delete(p["id"]), p["id"], "policies.delete")
    expect_status(lambda: client.policies.get(p["id"]), {404}, "deleted policy")
    a = need(agent, "agents.create")
    after = client.policies.evaluate(a["id"], "deploy", resource="cluster/prod")
    expect(after.get("allowed") is True and after.get("policies_evaluated") == 0, "a deleted policy applies", after)


check("GET /api/v1/policies/health", policies_health)
check("policies.list / get", policies_list_get)
check("policies.update (PUT)", policies_update)
check("policies.evaluate (POST /policies/evaluate)", policies_evaluate)
check("policies.check_authorization (POST /policies/authorize)", policies_check_authorization)
check("policies.delete", policies_delete)


# ---------------------------------------------------------------- workers

RUNNER = f"sdk-runner-{RUN}"


def worker_setup():
    code, envs = http("GET", "/api/v1/environments")
    expect(code == 200, "list environments", envs)
    env = envs["items"][0]["id"]
    code, queue = http("POST", f"/api/v1/environments/{env}/worker-queues", {"name": f"sdk-q-{RUN}"})
    expect(code == 201, "create a worker queue", queue)
    # The admin key registers a worker as its runner (workers.register speaks the legacy body).
    code, reg = http("POST", f"/api/v1/worker-queues/{queue['id']}/start", {"hostname": RUNNER, "runner_name": RUNNER})
    expect(code == 201, "register a worker", reg)
    return reg


registered = check("(setup) a worker registered on a new queue", worker_setup)


def workers_list():
    reg = need(registered, "worker registration")
    rows = items_of(client.workers.list(), "workers.list")
    expect(reg["worker_id"] in [r["id"] for r in rows], "workers.list lacks the worker", rows)


def workers_get():
    need(registered, "worker registration")
    runner = client.workers.get(RUNNER)
    expect(runner.get("name") == RUNNER and runner.get("worker_count") == 1, "workers.get(runner_name)", runner)
    expect_status(lambda: client.workers.get(f"no-runner-{RUN}"), {404}, "unknown runner")


def workers_start():
    reg = need(registered, "worker registration")
    started = client.workers.start(reg["worker_id"])
    expect(started.get("worker_id") == reg["worker_id"], "workers.start worker_id", started)
    expect(started.get("worker_queue_id") == reg["worker_queue_id"], "workers.start queue", started)
    expect_status(lambda: client.workers.start(str(uuid.uuid4())), {404}, "workers.start of an unknown worker")


check("workers.list", workers_list)
check("workers.get (runner name)", workers_get)
check("workers.start", workers_start)


def task_planning_plan():
    a = need(agent, "agents.create")
    answer = client.task_planning.plan(
        "Check the health of the kubernetes cluster and report failing pods", context={"cluster": "prod"}
    )
    uuid.UUID(answer["id"])
    expect(answer.get("planner") in ("llm", "heuristic"), "planner", answer)
    steps = answer["plan"]["steps"]
    expect(len(steps) >= 1 and all(s.get("agent_id") or s.get("team_id") for s in steps), "plan steps", answer)
    # The org's default model has no key here: the heuristic plans, and says why.
    if answer["planner"] == "heuristic":
        expect(answer.get("planner_reason"), "heuristic without planner_reason", answer)
    expect(a["id"] in [s.get("agent_id") for s in steps], "the kubernetes agent is not in the plan", answer)
    status, stored = http("GET", f"/api/v1/tasks/plans/{answer['id']}")
    expect(status == 200 and stored.get("id") == answer["id"] and len(stored.get("iterations", [])) == 1, "stored plan", stored)


def task_planning_plan_stream():
    need(agent, "agents.create")
    lines = [u["data"] for u in client.task_planning.plan_stream("Restart the failing pods in kubernetes")]
    events = [line[len("event: "):] for line in lines if line.startswith("event: ")]
    expect(events and events[0] == "progress", "the stream starts with progress", lines)
    expect(events[-1] == "complete", "the stream ends with complete", lines)
    last = json.loads(lines[-1][len("data: "):])
    expect(last["plan"]["steps"], "complete carries the plan", last)


check("task_planning.plan", task_planning_plan)
check("task_planning.plan_stream", task_planning_plan_stream)


# ---------------------------------------------------------------- context graph


def graph_setup():
    a = need(agent, "agents.create")
    status, answer = http("POST", "/api/v1/graph/nodes", {"nodes": [
        {"external_id": "svc/payments-api", "labels": ["Service"], "integration": "catalog",
         "properties": {"name": "payments-api", "tier": 1}},
        {"external_id": "db/payments-db", "labels": ["Database"], "integration": "catalog",
         "properties": {"name": "payments-db"}},
    ]})
    expect(status == 200 and answer.get("created") == 2, "graph ingestion", answer)
    status, answer = http("POST", "/api/v1/graph/relationships", {"relationships": [
        {"type": "DEPENDS_ON", "from": {"integration": "catalog", "external_id": "svc/payments-api"},
         "to": {"integration": "catalog", "external_id": "db/payments-db"}},
    ]})
    expect(status == 200 and answer.get("created") == 1, "graph relationship ingestion", answer)
    return a


graph_agent = check("graph ingestion (plain HTTP)", graph_setup)


def graph_calls():
    a = need(graph_agent, "graph ingestion")
    g = client.graph
    expect(g.health().get("status") == "healthy", "graph.health")
    nodes = g.list_nodes(integration="catalog", skip=0, limit=10)
    expect(nodes.get("count") == 2 and len(nodes.get("nodes", [])) == 2, "graph.list_nodes", nodes)
    node = g.get_node(a["id"])
    expect(node.get("labels") == ["Agent"] and node.get("integration") == "control_plane", "graph.get_node (projected agent)", node)
    found = g.search_nodes({"label": "Service", "property_filters": {"tier": 1}})
    expect([n["properties"]["name"] for n in found["nodes"]] == ["payments-api"], "graph.search_nodes", found)
    found = g.search_nodes_by_text({"search_text": "PAYMENTS-DB"}, integration="catalog")
    expect(found.get("count") == 1, "graph.search_nodes_by_text", found)
    db = found["nodes"][0]["id"]
    rels = g.get_relationships(db, direction="incoming", relationship_type="DEPENDS_ON")
    expect(rels.get("count") == 1, "graph.get_relationships", rels)
    sub = g.get_subgraph(db, depth=2)
    expect(len(sub.get("nodes", [])) == 2 and len(sub.get("relationships", [])) == 1, "graph.get_subgraph", sub)
    labels = g.list_labels()
    expect({"Agent", "Service", "Database"} <= {l["name"] for l in labels["labels"]}, "graph.list_labels", labels)
    types = g.list_relationship_types(integration="catalog")
    expect(types.get("relationship_types") == [{"name": "DEPENDS_ON", "count": 1}], "graph.list_relationship_types", types)
    stats = g.get_stats()
    expect(stats.get("node_count", 0) >= 3 and stats.get("relationship_count", 0) >= 1, "graph.get_stats", stats)
    result = g.execute_query({"query": "MATCH (s:Service)-[:DEPENDS_ON]->(d:Database {name: 'payments-db'}) RETURN s.name AS service"})
    expect(result.get("results") == [{"service": "payments-api"}], "graph.execute_query", result)
    expect_status(lambda: g.execute_query({"query": "MATCH (n) DETACH DELETE n"}), {422}, "graph.execute_query of a write")
    sources = g.list_integrations()
    expect({"catalog", "control_plane"} <= {i["name"] for i in sources["integrations"]}, "graph.list_integrations", sources)


check("graph: the 12 calls", graph_calls)


def agents_delete():
    a = need(agent, "agents.create")
    expect_deleted(client.agents.delete(a["id"]), a["id"], "agents.delete")
    expect_status(lambda: client.agents.get(a["id"]), {404}, "get after delete")
    expect_status(lambda: client.agents.delete(a["id"]), {404}, "second delete")


check("agents.delete", agents_delete)


def unauthenticated():
    bad = ControlPlaneClient(api_key="kby_" + "x" * 43, base_url=BASE_URL)
    try:
        bad.models.list()
    except Exception as e:  # noqa: BLE001
        # The client turns 401 into AuthenticationError (no status code on it).
        expect("Invalid API token" in str(e) or status_of(e) == 401, f"unknown key: {e}")
        return
    raise AssertionError("an unknown key was accepted")


check("unknown key -> 401 (AuthenticationError)", unauthenticated)

# Services whose server side has not landed yet (KUBIYA_SDK_COMPAT_PENDING=secrets,integrations):
# their checks still run and print, but do not fail the suite.
pending = [p for p in os.environ.get("KUBIYA_SDK_COMPAT_PENDING", "").split(",") if p]
waived = [name for name, ok in results if not ok and any(p in name for p in pending)]
failed = [name for name, ok in results if not ok and name not in waived]
print(f"\n{len(results) - len(failed) - len(waived)} passed, {len(failed)} failed, {len(waived)} pending")
for name in failed:
    print(f"  failed: {name}")
for name in waived:
    print(f"  pending: {name}")
sys.exit(1 if failed else 0)

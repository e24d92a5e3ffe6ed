package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
)

const demoModule = `export default {
  async fetch(request) {
    return new Response("hello from a Worker deployed through tollgate\n");
  },
};
`

// runDemo is the narrated showcase: it starts `tollgate serve` over stdio on
// the sandbox with its own config and database, connects as an MCP client,
// and walks through pricing, a policy refusal, a registration that pauses for
// a human approval (given here by the local approver CLI, as a person would),
// a preview and a production deploy, the budget rails, and the audit chain.
func runDemo(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlagSet("demo", "run a narrated end-to-end session against the sandbox")
	keep := fs.Bool("keep", false, "keep the demo's folder (config, database, logs) afterwards")
	dir := fs.String("dir", "", "folder for the demo's files (default: a new temporary folder)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	temporary := *dir == ""
	if temporary {
		if *dir, err = os.MkdirTemp("", "tollgate-demo-"); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return err
	}
	d := &demo{out: out, self: self, dir: *dir, ctx: ctx}
	if err := d.writeConfig(); err != nil {
		return err
	}
	err = d.run()
	switch {
	case err != nil && temporary:
		// Keep what explains the failure (the server's log, the database).
		fmt.Fprintf(out, "\nthe demo failed; its files are kept in %s\n", *dir)
	case temporary && !*keep:
		_ = os.RemoveAll(*dir)
	}
	return err
}

type demo struct {
	ctx  context.Context
	out  io.Writer
	self string
	dir  string
	cli  *client.Client
	step int
	// progressToken is the current call's; progress is printed for it only.
	mu            sync.Mutex
	progressToken string
	outMu         sync.Mutex // say is called from several goroutines
}

func (d *demo) cfgPath() string { return filepath.Join(d.dir, "tollgate.yaml") }
func (d *demo) dbPath() string  { return filepath.Join(d.dir, "tollgate.db") }

func (d *demo) writeConfig() error {
	user := osUser()
	cfg := fmt.Sprintf(`# tollgate demo configuration
agent: demo-agent
agents:
  - name: demo-agent
    team: web
    roles: [agent, deployer]
    owner: alice          # alice answers for this agent, so she may never approve its requests
    attributes: {environment: dev, trust_tier: standard}
approvers:
  - name: bob
    os_user: %q       # you, acting as bob from the CLI
    roles: [approver]
budgets:
  - {scope: team:web, window: day, limit: "30.00", currency: USD}
limits:
  - {scope: agent:demo-agent, action: register_domain, window: day, max: 3}
approvals:
  wait: 30s
  expiry: 10m
`, user)
	return os.WriteFile(d.cfgPath(), []byte(cfg), 0o600)
}

func (d *demo) say(format string, args ...any) {
	d.outMu.Lock()
	defer d.outMu.Unlock()
	fmt.Fprintf(d.out, format+"\n", args...)
}

func (d *demo) heading(title string) {
	d.step++
	d.say("\n\033[1m%d. %s\033[0m", d.step, title)
}

func (d *demo) run() error {
	d.say("tollgate demo — everything runs locally against the built-in Cloudflare sandbox; nothing is bought.")
	d.say("files: %s", d.dir)
	logPath := filepath.Join(d.dir, "server.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()

	d.heading("Start tollgate serve over stdio and connect as an MCP client")
	serveArgs := []string{"serve", "--transport", "stdio", "--sandbox", "--config", d.cfgPath(), "--db", d.dbPath()}
	// The checkout's policies when run from it; otherwise serve uses the
	// ones built into the binary (TOLLGATE_POLICIES still wins).
	if _, err := os.Stat("cerbos-policies"); err == nil {
		policies, err := filepath.Abs("cerbos-policies")
		if err != nil {
			return err
		}
		serveArgs = append(serveArgs, "--policies", policies)
	}
	d.say("$ tollgate %s", strings.Join(serveArgs, " "))
	d.cli, err = client.NewStdioMCPClientWithOptions(d.self, os.Environ(), serveArgs, transport.WithCommandStderrWriter(logFile))
	if err != nil {
		return err
	}
	defer d.cli.Close()
	d.cli.OnNotification(func(n mcp.JSONRPCNotification) {
		if n.Method != "notifications/progress" {
			return
		}
		msg, ok := n.Params.AdditionalFields["message"].(string)
		d.mu.Lock()
		current := d.progressToken
		d.mu.Unlock()
		// Only the current call's progress: a late one of the last call is noise.
		if ok && fmt.Sprint(n.Params.AdditionalFields["progressToken"]) == current {
			d.say("   … %s", msg)
		}
	})
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = mcp.LATEST_PROTOCOL_VERSION
	init.Params.ClientInfo = mcp.Implementation{Name: "tollgate-demo", Version: version}
	ictx, cancel := context.WithTimeout(d.ctx, 60*time.Second)
	defer cancel()
	// Start wires the notification handler (the transport is already running).
	if err := d.cli.Start(ictx); err != nil {
		return err
	}
	res, err := d.cli.Initialize(ictx, init)
	if err != nil {
		return fmt.Errorf("initialize (server log: %s): %w", logPath, err)
	}
	tools, err := d.cli.ListTools(ictx, mcp.ListToolsRequest{})
	if err != nil {
		return err
	}
	var names []string
	for _, t := range tools.Tools {
		names = append(names, t.Name)
	}
	d.say("connected to %s %s; tools: %s", res.ServerInfo.Name, res.ServerInfo.Version, strings.Join(names, ", "))

	d.heading("Price a domain (check_domain, read-only)")
	if _, err := d.call("check_domain", map[string]any{"domain": "Tollgate-Demo.DEV."}); err != nil {
		return err
	}

	d.heading("Estimate a registration: price, policy, budgets, approval (estimate_cost)")
	if _, err := d.call("estimate_cost", map[string]any{"action": "register_domain", "params": map[string]any{"domain": "tollgate-demo.dev", "years": 1}}); err != nil {
		return err
	}

	d.heading("Ask for something the policy refuses: a .xyz domain")
	if _, err := d.call("register_domain", map[string]any{"domain": "tollgate-demo.xyz", "reason": "Landing page for the demo campaign"}); err != nil {
		return err
	}

	d.heading("Register a domain: the call pauses until a human approves")
	d.say("   (in ~3 s the demo approves it as bob with the local approver CLI, as a person would in Slack)")
	approved, stop := d.approveSoon("register_domain", 3*time.Second)
	v, err := d.call("register_domain", map[string]any{
		"domain": "tollgate-demo.dev", "reason": "Landing page for the tollgate demo, needed for the launch post", "idempotency_key": "demo-register-1",
	})
	if err != nil {
		stop()
		return err
	}
	if err := <-approved; err != nil {
		return err
	}
	if v["status"] == "awaiting_approval" {
		if _, err := d.call("get_operation", map[string]any{"operation_id": v["operation_id"], "wait_seconds": 30}); err != nil {
			return err
		}
	}

	d.heading("Retry the same call with the same idempotency key: same operation, no second purchase")
	if _, err := d.call("register_domain", map[string]any{
		"domain": "tollgate-demo.dev", "reason": "Landing page for the tollgate demo, needed for the launch post", "idempotency_key": "demo-register-1",
	}); err != nil {
		return err
	}

	d.heading("Deploy a Worker to preview (no approval needed, no cost)")
	if _, err := d.call("deploy_worker", map[string]any{
		"script_name": "web-hello", "module": demoModule, "compatibility_date": "2025-01-01", "environment": "preview",
		"reason": "Preview of the landing page Worker for review",
	}); err != nil {
		return err
	}

	d.heading("Deploy the same Worker to production: approval, then the month's plan commitment")
	approved, stop = d.approveSoon("deploy_worker", 3*time.Second)
	_, err = d.call("deploy_worker", map[string]any{
		"script_name": "web-hello", "module": demoModule, "compatibility_date": "2025-01-01", "environment": "production",
		"reason": "Ship the reviewed landing page Worker", "idempotency_key": "demo-deploy-prod-1",
	})
	stop()
	if err != nil {
		return err
	}
	if err := <-approved; err != nil {
		return err
	}

	if err := d.liveSite(); err != nil {
		return err
	}

	d.heading("Budget rails: another domain would not fit what is left of the team's 30.00 USD day budget")
	if _, err := d.call("estimate_cost", map[string]any{"action": "register_domain", "params": map[string]any{"domain": "tollgate-launch.app"}}); err != nil {
		return err
	}
	if _, err := d.call("register_domain", map[string]any{"domain": "tollgate-launch.app", "reason": "Second landing page for the launch campaign"}); err != nil {
		return err
	}

	d.heading("Policy rails: agents may not buy ten years at once")
	if _, err := d.call("register_domain", map[string]any{"domain": "tollgate-brand.dev", "years": 10, "reason": "Long-term brand protection for the launch"}); err != nil {
		return err
	}

	d.heading("What the agent can see of its spending (spend_status) and history (list_operations)")
	if _, err := d.call("spend_status", map[string]any{}); err != nil {
		return err
	}
	if _, err := d.call("list_operations", map[string]any{"limit": 10}); err != nil {
		return err
	}

	d.heading("The audit trail: hash-chained, verifiable")
	return d.cmd("audit", "verify")
}

// demoModuleV2 is the next version of the landing page Worker.
const demoModuleV2 = `export default {
  async fetch(request) {
    return new Response("hello again: version 2, rolled out gradually through tollgate\n");
  },
};
`

// liveSite continues from the registered domain and the Worker in
// production to a live site: a new version previewed, rolled out to
// production 10/50/100 after one approval, served on the apex and www,
// rolled back, and www detached, each step shown in the audit trail.
func (d *demo) liveSite() error {
	d.heading("From a name to a live site: preview version 2 of the Worker")
	if _, err := d.call("deploy_worker", map[string]any{
		"script_name": "web-hello", "module": demoModuleV2, "compatibility_date": "2025-01-01", "environment": "preview",
		"reason": "Preview of version 2 of the landing page",
	}); err != nil {
		return err
	}

	d.heading("Promote version 2 to production as a 10/50/100 rollout: one approval covers every step")
	approved, stop := d.approveSoon("deploy_worker", 3*time.Second)
	rollout, err := d.call("deploy_worker", map[string]any{
		"script_name": "web-hello", "module": demoModuleV2, "compatibility_date": "2025-01-01", "environment": "production",
		"rollout": map[string]any{"steps": []int{10, 50, 100}, "interval": "5s"},
		"reason":  "Roll out version 2 of the landing page gradually", "idempotency_key": "demo-rollout-1",
	})
	stop()
	if err != nil {
		return err
	}
	if err := <-approved; err != nil {
		return err
	}
	if rollout["status"] != "succeeded" {
		if rollout, err = d.call("get_operation", map[string]any{"operation_id": rollout["operation_id"], "wait_seconds": 40}); err != nil {
			return err
		}
	}

	var attached []string
	for _, host := range []string{"tollgate-demo.dev", "www.tollgate-demo.dev"} {
		d.heading("Serve " + host + " from the Worker: the approver sees what serves it now")
		approved, stop := d.approveSoon("attach_worker_domain", 2*time.Second)
		v, err := d.call("attach_worker_domain", map[string]any{
			"script_name": "web-hello", "hostname": host, "environment": "production",
			"reason": "Put the landing page live on " + host,
		})
		stop()
		if err != nil {
			return err
		}
		if err := <-approved; err != nil {
			return err
		}
		if id, _ := v["operation_id"].(string); id != "" {
			attached = append(attached, id)
		}
	}

	d.heading("What the agent may see: its domains, hostnames and Workers (list_domains, list_workers)")
	if _, err := d.call("list_domains", map[string]any{}); err != nil {
		return err
	}
	if _, err := d.call("list_workers", map[string]any{}); err != nil {
		return err
	}

	d.heading("Roll back: all traffic returns to version 1 (no approval: it is code a human let through)")
	if _, err := d.call("rollback_worker", map[string]any{"script_name": "web-hello", "reason": "Version 2 doubled the error rate"}); err != nil {
		return err
	}

	d.heading("Detach www: the approver sees which Worker stops serving it")
	approved, stop = d.approveSoon("detach_worker_domain", 2*time.Second)
	_, err = d.call("detach_worker_domain", map[string]any{"hostname": "www.tollgate-demo.dev", "reason": "The campaign moves www to another page"})
	stop()
	if err != nil {
		return err
	}
	if err := <-approved; err != nil {
		return err
	}

	d.heading("Every step is in the audit trail: the rollout's story (tollgate audit show)")
	if id, _ := rollout["operation_id"].(string); id != "" {
		if err := d.cmd("audit", "show", id); err != nil {
			return err
		}
	}
	if len(attached) > 0 {
		d.say("   and the apex's attach:")
		if err := d.cmd("audit", "show", attached[0]); err != nil {
			return err
		}
	}
	return nil
}

// call runs one tool call and prints its outcome compactly.
func (d *demo) call(name string, args map[string]any) (map[string]any, error) {
	argText, _ := json.Marshal(args)
	if len(argText) > 160 {
		argText = append(argText[:160], "…"...)
	}
	d.say("→ %s %s", name, argText)
	req := mcp.CallToolRequest{}
	req.Params.Name = name
	req.Params.Arguments = args
	token := fmt.Sprintf("%s-%d-%d", name, d.step, time.Now().UnixNano())
	d.mu.Lock()
	d.progressToken = token
	d.mu.Unlock()
	req.Params.Meta = &mcp.Meta{ProgressToken: token}
	ctx, cancel := context.WithTimeout(d.ctx, 2*time.Minute)
	defer cancel()
	res, err := d.cli.CallTool(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var out map[string]any
	if b, err := json.Marshal(res.StructuredContent); err == nil {
		_ = json.Unmarshal(b, &out)
	}
	if res.IsError {
		for _, c := range res.Content {
			if t, ok := c.(mcp.TextContent); ok {
				first, _, _ := strings.Cut(t.Text, "\n\n")
				d.say("← refused: %s", first)
			}
		}
		return out, nil
	}
	d.say("← %s", compact(name, out))
	return out, nil
}

func compact(tool string, v map[string]any) string {
	pick := func(keys ...string) string {
		var parts []string
		for _, k := range keys {
			if x, ok := v[k]; ok && x != nil && x != "" {
				switch t := x.(type) {
				case map[string]any:
					if disp, ok := t["display"]; ok {
						x = disp
					} else {
						b, _ := json.Marshal(t)
						x = string(b)
					}
				case []any:
					b, _ := json.Marshal(t)
					x = string(b)
				}
				parts = append(parts, fmt.Sprintf("%s=%v", k, x))
			}
		}
		return strings.Join(parts, "  ")
	}
	switch tool {
	case "check_domain":
		return pick("domain", "registrable", "tier", "registration_per_year", "renewal_per_year", "reason")
	case "estimate_cost":
		return pick("amount", "basis", "policy", "would_block", "block_reason", "approval")
	case "spend_status":
		var lines []string
		for _, key := range []string{"budgets", "limits"} {
			items, _ := v[key].([]any)
			for _, it := range items {
				m, _ := it.(map[string]any)
				if key == "budgets" {
					lines = append(lines, fmt.Sprintf("\n     budget %v %v: spent %v, held %v, remaining %v of %v", m["scope"], m["window"],
						moneyText(m["spent"]), moneyText(m["held"]), moneyText(m["remaining"]), moneyText(m["limit"])))
				} else {
					lines = append(lines, fmt.Sprintf("\n     limit %v %v per %v: %v of %v used", m["scope"], m["action"], m["window"], m["used"], m["max"]))
				}
			}
		}
		return fmt.Sprintf("agent %v (team %v), frozen: %v%s", v["agent"], v["team"], v["frozen"], strings.Join(lines, ""))
	case "list_domains":
		var lines []string
		doms, _ := v["domains"].([]any)
		for _, o := range doms {
			m, _ := o.(map[string]any)
			lines = append(lines, fmt.Sprintf("\n     %v (registered by your team: %v)", m["domain"], m["registered_by_team"]))
			hs, _ := m["hostnames"].([]any)
			for _, h := range hs {
				hm, _ := h.(map[string]any)
				lines = append(lines, fmt.Sprintf("\n       %v → Worker %v", hm["hostname"], hm["worker"]))
			}
		}
		return fmt.Sprintf("%d domains:%s", len(doms), strings.Join(lines, ""))
	case "list_workers":
		var lines []string
		ws, _ := v["workers"].([]any)
		for _, o := range ws {
			m, _ := o.(map[string]any)
			lines = append(lines, fmt.Sprintf("\n     %v (%v) serves %v", m["name"], m["environment"], m["hostnames"]))
		}
		return fmt.Sprintf("%d workers:%s", len(ws), strings.Join(lines, ""))
	case "list_operations":
		var lines []string
		ops, _ := v["operations"].([]any)
		for _, o := range ops {
			m, _ := o.(map[string]any)
			lines = append(lines, fmt.Sprintf("\n     %v  %-18v %-17v %v", m["operation_id"], m["tool"], m["status"], m["resource"]))
		}
		return fmt.Sprintf("%d operations:%s", len(ops), strings.Join(lines, ""))
	}
	return pick("operation_id", "status", "resource", "quote", "charged", "result", "error")
}

func moneyText(v any) any {
	if m, ok := v.(map[string]any); ok {
		return m["display"]
	}
	return v
}

// approveSoon waits, finds the pending request for tool, and approves it as
// bob through `tollgate approvals approve`, printing what it runs.
func (d *demo) approveSoon(tool string, after time.Duration) (<-chan error, func()) {
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(d.ctx)
	go func() {
		select {
		case <-time.After(after):
		case <-ctx.Done():
			done <- nil
			return
		}
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) && ctx.Err() == nil {
			var list bytes.Buffer
			c := exec.CommandContext(ctx, d.self, "approvals", "list", "--json", "--config", d.cfgPath(), "--db", d.dbPath())
			c.Stdout = &list
			if err := c.Run(); err != nil {
				done <- fmt.Errorf("approvals list: %w", err)
				return
			}
			var reqs []struct {
				ID, Tool, Summary string
			}
			_ = json.Unmarshal(list.Bytes(), &reqs)
			for _, r := range reqs {
				if r.Tool == tool {
					d.say("   $ tollgate approvals approve %s --as bob      # %s", r.ID, r.Summary)
					done <- d.cmd("approvals", "approve", r.ID, "--as", "bob")
					return
				}
			}
			time.Sleep(300 * time.Millisecond)
		}
		if ctx.Err() != nil {
			done <- nil
			return
		}
		done <- errors.New("no pending approval request appeared")
	}()
	return done, cancel
}

// cmd runs a tollgate CLI subcommand on the demo's config and database.
func (d *demo) cmd(args ...string) error {
	args = append(args, "--config", d.cfgPath(), "--db", d.dbPath())
	var buf bytes.Buffer
	c := exec.CommandContext(d.ctx, d.self, args...)
	c.Stdout, c.Stderr = &buf, &buf
	err := c.Run()
	for _, l := range strings.Split(strings.TrimRight(buf.String(), "\n"), "\n") {
		d.say("   %s", l)
	}
	return err
}

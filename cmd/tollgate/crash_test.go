//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/cloudflare"
	"github.com/tollgatehq/tollgate/cloudflare/sandbox"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/tools"
)

// TestCrashAtEveryStage is issue 4's crash test, with issue 10's second
// process. A real `tollgate serve` child, driven over MCP stdio, is taken to
// each stage of the pipeline; a second server is then started on the same
// database while the first still works, and must leave the first's operation
// and tokens alone (its start-up takeover and token sweep ran before it
// answered); then the first is killed with SIGKILL, and the second takes its
// work over and finishes it. The Cloudflare
// account is a `tollgate sandbox` process that outlives both, reached as a
// real account (parent token, account id, API base), whose faults are set
// over its admin endpoint to hold one request mid-flight. After each
// scenario the ledger must agree with the sandbox: no lost charge, no double
// charge, no stuck hold, and `tollgate audit verify` passes.
func TestCrashAtEveryStage(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real tollgate, sandbox and Cerbos processes; skipped with -short")
	}
	t.Parallel()
	const price = 12_180_000 // .dev in the sandbox
	tests := []struct {
		name string
		// fault, if set, is put on the sandbox once the call waits for its
		// approval; the approval is then given to the first server, which
		// runs into the fault; it is killed once the fault holds a request
		// and the operation is in killIn. Without a fault the first server
		// is killed while the operation waits for approval and the approval
		// is given after the restart.
		fault  string
		killIn ledger.State
		// registeredAtKill: the registration exists when the server dies.
		registeredAtKill bool
		want             ledger.State
		wantCode         string
	}{
		{name: "after reserve, awaiting approval", killIn: ledger.StateAwaitingApproval,
			want: ledger.StateSucceeded},
		// The approval was consumed and the token mint hangs: the operation
		// never reached executing. The restart fails it closed (the
		// single-use approval is spent) and releases the hold; nothing reached
		// the registrar.
		{name: "approved, minting the execution token", fault: `{"hang":true,"method":"POST","path_contains":"/tokens"}`,
			killIn: ledger.StateApproved, want: ledger.StateFailed, wantCode: "interrupted"},
		{name: "during the registration call, before it acted", fault: `{"hang":true,"method":"POST","path_contains":"/registrar/registrations"}`,
			killIn: ledger.StateExecuting, want: ledger.StateFailed, wantCode: "not_executed"},
		{name: "during the registration call, after it acted", fault: `{"hang":true,"fail_after_effect":true,"method":"POST","path_contains":"/registrar/registrations"}`,
			killIn: ledger.StateExecuting, registeredAtKill: true, want: ledger.StateSucceeded},
		{name: "registered, revoking the token, before settle", fault: `{"hang":true,"method":"DELETE","path_contains":"/tokens/"}`,
			killIn: ledger.StateExecuting, registeredAtKill: true, want: ledger.StateSucceeded},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			e := newCrashEnv(t)
			domain := fmt.Sprintf("crash-stage-%d.dev", i)

			first := e.serve()
			v := first.registerDomain(domain)
			if v.Status != "awaiting_approval" || v.Quote == nil || v.Quote.Micros != price {
				t.Fatalf("register: %+v", v)
			}
			if _, held := e.teamSpend(); held != price {
				t.Fatalf("held %d after reserve, want %d", held, price)
			}
			// The call answers once the operation is awaiting_approval; the
			// approval request is written just after. Wait for it: the stage
			// is "a human has been asked".
			reqID := e.requestID(v.OperationID)
			if tc.fault != "" {
				e.setFaults(tc.fault)
				e.approve(reqID)
				e.waitFor("the fault to hold a request with the operation "+string(tc.killIn), func() bool {
					return e.hanging() == 1 && e.operation(v.OperationID).State == tc.killIn
				})
				if got := len(e.sandboxState().Registrations()); got != b2i(tc.registeredAtKill) {
					t.Fatalf("%d registrations when the server is killed, want %d", got, b2i(tc.registeredAtKill))
				}
			}
			before := e.operation(v.OperationID)
			if before.State != tc.killIn || before.LeaseID == "" {
				t.Fatalf("in %s under lease %q, want %s under the first server's", before.State, before.LeaseID, tc.killIn)
			}
			tokensBefore := e.tokensOf(before.LeaseID)
			if tc.killIn == ledger.StateExecuting && len(tokensBefore) == 0 {
				t.Fatal("the executing server holds no token: the sweep check would prove nothing")
			}

			second := e.serve()
			if op := e.operation(v.OperationID); op.State != tc.killIn || op.LeaseID != before.LeaseID {
				t.Fatalf("a second server took a live server's operation: %s under lease %q", op.State, op.LeaseID)
			}
			if got := e.tokensOf(before.LeaseID); !containsAll(got, tokensBefore) {
				t.Fatalf("a second server's sweep touched a live server's tokens: %v, were %v", got, tokensBefore)
			}
			if tc.fault != "" {
				// Requests from now on are served; the one held stays held
				// until its client dies.
				e.setFaults(`{}`)
			}
			first.kill()
			if tc.fault != "" {
				// The dead client's held request goes away with its connection.
				e.waitFor("the held request to end", func() bool { return e.hanging() == 0 })
			} else {
				e.approve(reqID)
			}
			got := second.waitTerminal(v.OperationID)
			// The dead server's lease goes once the second has taken its work
			// over and swept its tokens (the shared quote token too).
			e.waitLeaseGone(before.LeaseID)
			second.stop()

			op := e.operation(v.OperationID)
			if got.Status != string(op.State) || op.State != tc.want || op.ErrorCode != tc.wantCode {
				t.Fatalf("ended %s (%s: %s), MCP says %s; want %s %q", op.State, op.ErrorCode, op.Error, got.Status, tc.want, tc.wantCode)
			}
			if tc.want == ledger.StateSucceeded && (op.Charged == nil || op.Charged.Micros != price) {
				t.Fatalf("charged %+v, want %d", op.Charged, price)
			}
			e.checkLedgerMatchesSandbox()
			t.Logf("%s: %s in %v", tc.name, op.State, time.Since(start).Round(time.Millisecond))
		})
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

const crashReason = "crash test: a launch page that must be bought exactly once"

// crashEnv is one scenario's world: a `tollgate sandbox` process standing
// in for the Cloudflare account (it outlives every server), a config and a
// database, and the `tollgate serve` children started on them.
type crashEnv struct {
	t       *testing.T
	bin     string
	cerbos  string
	dir     string
	cfgPath string
	sbState string
	sbAddr  string
	account string
	parent  string
	dsn     string // the database every process uses: a SQLite path or a postgres:// URL
	db      *ledger.DB
	mu      sync.Mutex // logs and serves, for servers started in parallel
	logs    []string
	serves  int
	// extraEnv is appended to every child's environment (Slack, for one).
	extraEnv []string
}

// crashConfig is what a scenario changes in the env's tollgate.yaml.
type crashConfig struct {
	agents []string // all in team web; the first is the default agent
	wait   string   // approvals.wait
	budget string   // team:web's day budget
	db     string   // the database; "" is tollgate.db in the env's folder
	// slackUser is approver bob's Slack user id; "" gives him none.
	slackUser string
}

func newCrashEnv(t *testing.T) *crashEnv {
	t.Helper()
	return newCrashEnvWith(t, crashConfig{})
}

func newCrashEnvWith(t *testing.T, cc crashConfig) *crashEnv {
	t.Helper()
	if len(cc.agents) == 0 {
		cc.agents = []string{"web-bot"}
	}
	if cc.wait == "" {
		cc.wait = "0s"
	}
	if cc.budget == "" {
		cc.budget = "100.00"
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	e := &crashEnv{t: t, bin: tollgateBinary(t), cerbos: filepath.Join(root, ".tools", "bin", "cerbos"), dir: t.TempDir()}
	if _, err := os.Stat(e.cerbos); err != nil {
		t.Fatalf("the Cerbos binary is missing (run go tool task setup): %v", err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, l := range e.logs {
			b, _ := os.ReadFile(l)
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			t.Logf("--- %s (tail)\n%s", filepath.Base(l), b)
		}
	})
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	e.cfgPath = filepath.Join(e.dir, "tollgate.yaml")
	var agents strings.Builder
	for _, a := range cc.agents {
		fmt.Fprintf(&agents, `  - name: %s
    team: web
    roles: [agent, deployer]
    owner: alice
    attributes: {environment: dev, trust_tier: standard}
`, a)
	}
	bobSlack := ""
	if cc.slackUser != "" {
		bobSlack = "\n    slack_user_id: " + cc.slackUser
	}
	e.dsn = cc.db
	if e.dsn == "" {
		e.dsn = filepath.Join(e.dir, "tollgate.db")
	}
	cfg := fmt.Sprintf(`db: %q
transport: stdio
agent: %s
auth: none
cerbos:
  policies: %s
agents:
%sapprovers:
  - name: bob
    os_user: %s%s
    roles: [approver]
approvals:
  wait: %s
  expiry: 30m
budgets:
  - scope: team:web
    window: day
    limit: "%s"
`, e.dsn, cc.agents[0], filepath.Join(root, "cerbos-policies"), agents.String(), u.Username, bobSlack, cc.wait, cc.budget)
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	e.startSandbox()

	// The test reads the same database the servers write, as the CLI does.
	e.db, err = ledger.Open(context.Background(), e.dsn,
		ledger.WithMigrations(approvals.Migrations), ledger.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.db.Close() })
	return e
}

// child is a command for a child process that dies with the test.
func (e *crashEnv) child(name string, args ...string) (*exec.Cmd, *os.File) {
	e.t.Helper()
	logPath := filepath.Join(e.dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		e.t.Fatal(err)
	}
	e.mu.Lock()
	e.logs = append(e.logs, logPath)
	e.mu.Unlock()
	cmd := exec.Command(e.bin, args...)
	cmd.Env = e.env()
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd, logf
}

// env is the child environment: nothing tollgate, Cloudflare or Slack
// inherited from the machine, then the test's own settings.
func (e *crashEnv) env() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "TOLLGATE_") || strings.HasPrefix(k, "CLOUDFLARE_") || strings.HasPrefix(k, "SLACK_") {
			continue
		}
		out = append(out, kv)
	}
	out = append(out, "TOLLGATE_CONFIG="+e.cfgPath, "TOLLGATE_CERBOS_BIN="+e.cerbos)
	if e.sbAddr != "" {
		out = append(out,
			"CLOUDFLARE_API_TOKEN="+e.parent, "CLOUDFLARE_ACCOUNT_ID="+e.account,
			"TOLLGATE_CLOUDFLARE_API_BASE="+sandbox.APIBase(e.sbAddr))
	}
	return append(out, e.extraEnv...)
}

// startSandbox runs `tollgate sandbox` on a free loopback port with a state
// file and reads its address, account id and parent token from its banner.
func (e *crashEnv) startSandbox() {
	t := e.t
	e.sbState = filepath.Join(e.dir, "sandbox.json")
	cmd, logf := e.child("sandbox", "sandbox", "--listen", "127.0.0.1:0", "--state", e.sbState)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		_ = logf.Close()
	})
	type banner struct{ addr, account, parent string }
	got := make(chan banner, 1)
	go func() {
		var b banner
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			switch {
			case len(f) >= 5 && f[0] == "Cloudflare" && f[3] == "on":
				b.addr = strings.TrimSuffix(strings.TrimPrefix(f[4], "http://"), sandbox.APIPrefix)
			case len(f) >= 3 && f[0] == "account" && f[1] == "id":
				b.account = f[2]
			case len(f) >= 3 && f[0] == "parent" && f[1] == "token":
				b.parent = f[2]
				got <- b
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case b := <-got:
		e.sbAddr, e.account, e.parent = b.addr, b.account, b.parent
	case <-time.After(2 * time.Minute): // a hang guard only
		t.Fatal("tollgate sandbox printed no banner")
	}
	if e.sbAddr == "" || len(e.parent) != 40 || len(e.account) != 32 {
		t.Fatalf("sandbox banner: addr %q account %q token of %d chars", e.sbAddr, e.account, len(e.parent))
	}
}

// serveProc is one `tollgate serve --transport stdio` child and the MCP
// client driving it.
type serveProc struct {
	e    *crashEnv
	c    *client.Client
	cmd  *exec.Cmd
	logf *os.File
	done bool
}

// serve starts `tollgate serve --transport stdio` with extra flags and
// initializes an MCP session on it.
func (e *crashEnv) serve(flags ...string) *serveProc {
	t := e.t
	e.mu.Lock()
	e.serves++
	name := fmt.Sprintf("serve-%d", e.serves)
	e.mu.Unlock()
	p := &serveProc{e: e}
	cmd, logf := e.child(name, append([]string{"serve", "--transport", "stdio"}, flags...)...)
	p.cmd, p.logf = cmd, logf
	c, err := client.NewStdioMCPClientWithOptions(e.bin, nil, nil,
		transport.WithCommandFunc(func(context.Context, string, []string, []string) (*exec.Cmd, error) {
			return cmd, nil
		}))
	if err != nil {
		t.Fatalf("start tollgate serve: %v", err)
	}
	p.c = c
	t.Cleanup(func() {
		if !p.done {
			p.kill()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = mcp.LATEST_PROTOCOL_VERSION
	init.Params.ClientInfo = mcp.Implementation{Name: "tollgate-crash-test", Version: "1"}
	if _, err := c.Initialize(ctx, init); err != nil {
		t.Fatalf("initialize tollgate serve: %v", err)
	}
	return p
}

// kill ends the server with SIGKILL: no shutdown code runs.
func (p *serveProc) kill() {
	p.done = true
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		p.e.t.Fatalf("kill tollgate serve: %v", err)
	}
	_ = p.c.Close() // reaps the process
	_ = p.logf.Close()
}

// stop ends the server the way an MCP client does, by closing its stdin,
// and requires a clean exit.
func (p *serveProc) stop() {
	p.done = true
	_ = p.c.Close()
	_ = p.logf.Close()
	if st := p.cmd.ProcessState; st == nil || !st.Success() {
		p.e.t.Fatalf("tollgate serve did not exit cleanly: %v", st)
	}
}

func (p *serveProc) callTool(name string, args map[string]any) tools.OperationView {
	p.e.t.Helper()
	v, err := p.call(name, args)
	if err != nil {
		p.e.t.Fatal(err)
	}
	return v
}

func (p *serveProc) registerDomain(domain string) tools.OperationView {
	return p.callTool("register_domain", map[string]any{"domain": domain, "reason": crashReason})
}

// waitTerminal long-polls get_operation on the server until the operation
// is terminal.
func (p *serveProc) waitTerminal(id string) tools.OperationView {
	deadline := time.Now().Add(60 * time.Second)
	for {
		v := p.callTool("get_operation", map[string]any{"operation_id": id, "wait_seconds": 5})
		if ledger.State(v.Status).Terminal() {
			return v
		}
		if time.Now().After(deadline) {
			p.e.t.Fatalf("operation %s still %s (%s)", id, v.Status, v.Error)
		}
	}
}

// cli runs a tollgate subcommand to completion.
func (e *crashEnv) cli(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.bin, args...)
	cmd.Env = e.env()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// waitLeaseGone waits until no process records lease any more: it was found
// dead, its work taken over and its tokens swept.
func (e *crashEnv) waitLeaseGone(lease string) {
	e.t.Helper()
	e.waitFor("lease "+lease+" to be taken over", func() bool {
		leases, err := e.db.Store().Leases(context.Background())
		if err != nil {
			e.t.Fatal(err)
		}
		for _, l := range leases {
			if l.ID == lease {
				return false
			}
		}
		return true
	})
}

// containsAll reports whether every one of want is in got.
func containsAll(got, want []string) bool {
	for _, w := range want {
		if !slices.Contains(got, w) {
			return false
		}
	}
	return true
}

// tokensOf lists the ids of the live account tokens minted by the process
// holding lease.
func (e *crashEnv) tokensOf(lease string) []string {
	var out []string
	for _, tok := range e.sandboxState().LiveTokens() {
		if cloudflare.TokenOwner(tok.Name) == lease {
			out = append(out, tok.ID)
		}
	}
	slices.Sort(out)
	return out
}

// requestID waits for the operation's approval request and returns its id,
// read with the CLI an approver uses.
func (e *crashEnv) requestID(opID string) string {
	t := e.t
	t.Helper()
	var reqID string
	e.waitFor("the approval request of "+opID, func() bool {
		out, err := e.cli("approvals", "list", "--json")
		if err != nil {
			t.Fatalf("approvals list: %v\n%s", err, out)
		}
		var reqs []approvals.Request
		if err := json.Unmarshal([]byte(out), &reqs); err != nil {
			t.Fatalf("approvals list: %v\n%s", err, out)
		}
		for _, r := range reqs {
			if r.OperationID == opID {
				reqID = r.ID
			}
		}
		return reqID != ""
	})
	return reqID
}

// approve approves a request as bob with the local approver CLI, exactly
// as a human would.
func (e *crashEnv) approve(reqID string) {
	t := e.t
	t.Helper()
	// --no-wait: the scenarios follow (or break) the execution themselves.
	out, err := e.cli("approvals", "approve", reqID, "--as", "bob", "--no-wait")
	if err != nil || !strings.Contains(out, "approved by bob") {
		t.Fatalf("approvals approve %s: %v\n%s", reqID, err, out)
	}
}

// setFaults replaces the sandbox's faults over its admin endpoint.
func (e *crashEnv) setFaults(body string) {
	resp, err := http.Post("http://"+e.sbAddr+sandbox.AdminFaultsPath, "application/json", strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		e.t.Fatalf("set faults %s: %d %s", body, resp.StatusCode, b)
	}
}

// hanging is the number of requests the sandbox's hang fault holds.
func (e *crashEnv) hanging() int {
	resp, err := http.Get("http://" + e.sbAddr + sandbox.AdminFaultsPath)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var st sandbox.AdminStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		e.t.Fatal(err)
	}
	return st.Hanging
}

func (e *crashEnv) waitFor(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// awaitingApproval waits until exactly n operations await approval and
// returns them.
func (e *crashEnv) awaitingApproval(what string, n int) []ledger.Operation {
	e.t.Helper()
	var waiting []ledger.Operation
	e.waitFor(what, func() bool {
		ops, _, err := e.db.ListOperations(context.Background(), ledger.OperationQuery{States: []ledger.State{ledger.StateAwaitingApproval}})
		if err != nil {
			e.t.Fatal(err)
		}
		waiting = ops
		return len(ops) == n
	})
	return waiting
}

func (e *crashEnv) operation(id string) ledger.Operation {
	op, err := e.db.Operation(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return op
}

// teamSpend is team:web's day budget: spent and held, in micros.
func (e *crashEnv) teamSpend() (spent, held int64) {
	sts, err := e.db.BudgetStatuses(context.Background(), ledger.TeamScope("web"))
	if err != nil || len(sts) != 1 {
		e.t.Fatalf("team budget: %+v %v", sts, err)
	}
	return sts[0].Spent.Micros, sts[0].Held.Micros
}

// sandboxState loads a copy of the sandbox's state file: what the
// "Cloudflare account" really holds.
func (e *crashEnv) sandboxState() *sandbox.Sandbox {
	b, err := os.ReadFile(e.sbState)
	if err != nil {
		e.t.Fatal(err)
	}
	cp := filepath.Join(e.t.TempDir(), "sandbox.json")
	if err := os.WriteFile(cp, b, 0o600); err != nil {
		e.t.Fatal(err)
	}
	sb, err := sandbox.New(sandbox.Options{StateFile: cp})
	if err != nil {
		e.t.Fatal(err)
	}
	return sb
}

// checkLedgerMatchesSandbox asserts the invariants after a scenario: every
// operation is terminal, nothing is held, spent is exactly the sum of the
// charges, each success was charged once and is registered at the sandbox
// (and nothing else is), no minted token survives, the audit chain
// verifies, and no child reported a data race.
func (e *crashEnv) checkLedgerMatchesSandbox() {
	t := e.t
	t.Helper()
	ops, _, err := e.db.ListOperations(context.Background(), ledger.OperationQuery{Team: "web", Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var charged int64
	var succeeded []string
	for _, op := range ops {
		if !op.State.Terminal() {
			t.Errorf("operation %s stuck in %s", op.ID, op.State)
		}
		settled := 0
		if err := e.db.Events(context.Background(), ledger.EventQuery{OperationID: op.ID}, func(ev ledger.Event) error {
			if ev.Type == ledger.EventBudgetSettled {
				settled++
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if op.State == ledger.StateSucceeded {
			if op.Charged == nil || settled != 1 {
				t.Errorf("%s succeeded: charged %+v, settled %d times; want one charge", op.ID, op.Charged, settled)
				continue
			}
			charged += op.Charged.Micros
			succeeded = append(succeeded, strings.TrimPrefix(op.Resource, "domain:"))
		} else if op.Charged != nil || settled != 0 {
			t.Errorf("%s is %s but charged %+v (settled %d times)", op.ID, op.State, op.Charged, settled)
		}
	}
	spent, held := e.teamSpend()
	if held != 0 || spent != charged {
		t.Errorf("team budget: spent %d held %d; want spent = sum of charges %d and nothing held", spent, held, charged)
	}
	sb := e.sandboxState()
	var registered []string
	for _, r := range sb.Registrations() {
		registered = append(registered, r.Domain)
		if r.Status != "active" {
			t.Errorf("registration %s is %s", r.Domain, r.Status)
		}
	}
	slices.Sort(registered)
	slices.Sort(succeeded)
	if !slices.Equal(registered, succeeded) {
		t.Errorf("sandbox registrations %v, succeeded operations %v", registered, succeeded)
	}
	// The sandbox writes token deletes to its state file within its flush
	// interval (a fraction of a second), not before answering.
	for deadline := time.Now().Add(30 * time.Second); ; sb = e.sandboxState() {
		var survived []sandbox.TokenRecord
		for _, tok := range sb.LiveTokens() {
			if strings.HasPrefix(tok.Name, "tollgate:") {
				survived = append(survived, tok)
			}
		}
		if len(survived) == 0 {
			break
		}
		if time.Now().After(deadline) {
			for _, tok := range survived {
				t.Errorf("minted token %s (%s) survived", tok.ID, tok.Name)
			}
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	out, err := e.cli("audit", "verify")
	if err != nil || !strings.Contains(out, "audit chain intact") {
		t.Errorf("tollgate audit verify: %v\n%s", err, out)
	}
	for _, l := range e.logs {
		if b, _ := os.ReadFile(l); bytes.Contains(b, []byte("DATA RACE")) {
			t.Errorf("%s reports a data race", filepath.Base(l))
		}
	}
}

// TestSandboxFaultFlags: `tollgate sandbox` takes its initial faults as
// flags, validated exactly as the admin endpoint validates a POST.
func TestSandboxFaultFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args   []string
		want   sandbox.Faults
		errHas string
	}{
		{nil, sandbox.Faults{}, ""},
		{[]string{"--hang-path", "/registrar/registrations", "--hang-method", "post"},
			sandbox.Faults{Hang: true, PathContains: "/registrar/registrations", Method: "POST"}, ""},
		{[]string{"--hang", "--fault-path", "/tokens/", "--fault-method", "DELETE", "--fail-after-effect"},
			sandbox.Faults{Hang: true, PathContains: "/tokens/", Method: "DELETE", FailAfterEffect: true}, ""},
		{[]string{"--error-rate", "0.5", "--rate-limit-rate", "0.25", "--latency", "20ms"},
			sandbox.Faults{ErrorRate: 0.5, RateLimitRate: 0.25, Latency: 20 * time.Millisecond}, ""},
		{[]string{"--hang-path", "/a", "--fault-path", "/b"}, sandbox.Faults{}, "disagree"},
		{[]string{"--hang-method", "GET", "--fault-method", "PUT"}, sandbox.Faults{}, "disagree"},
		{[]string{"--error-rate", "2"}, sandbox.Faults{}, "outside 0..1"},
		{[]string{"--fault-method", "GET /"}, sandbox.Faults{}, "not an HTTP method"},
		{[]string{"--latency", "1h"}, sandbox.Faults{}, "allowed 0 to 10m0s"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Parallel()
			fs := newFlagSet("sandbox", "test")
			fs.SetOutput(io.Discard)
			build := sandboxFaultFlags(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			got, err := build()
			if tc.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("error %v, want one saying %q", err, tc.errHas)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("faults %+v (%v), want %+v", got, err, tc.want)
			}
		})
	}
}

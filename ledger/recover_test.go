package ledger

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func ids(ops []Operation) []string {
	out := make([]string, len(ops))
	for i, o := range ops {
		out[i] = o.ID
	}
	slices.Sort(out)
	return out
}

func sorted(s ...string) []string {
	slices.Sort(s)
	return s
}

// reclaimHelperEnv makes TestReclaimHelperProcess, run in a child process,
// open the database it names (with the audit key in the file beside it) and
// leave work in every live state.
const reclaimHelperEnv = "TOLLGATE_LEDGER_RECLAIM_HELPER"

// TestReclaimHelperProcess is the other process of TestReclaimOnlyDeadWork:
// it starts a lease, leaves one operation in each live state, prints their
// ids as JSON and waits to be killed. Run directly, it does nothing.
func TestReclaimHelperProcess(t *testing.T) {
	path := os.Getenv(reclaimHelperEnv)
	if path == "" {
		t.Skip("helper process for TestReclaimOnlyDeadWork")
	}
	ctx := context.Background()
	key, err := LoadAuditKey(path + ".key")
	if err != nil {
		t.Fatal(err)
	}
	db := openAt(t, path, WithAuditKey(key))
	if _, err := db.StartLease(ctx); err != nil {
		t.Fatal(err)
	}
	setBudget(t, db, TeamScope("t"), WindowDay, "100")
	out := map[State]string{}
	out[StatePlanned] = newOp(t, db, "a", "t", "register_domain", "p.dev").ID
	out[StateAuthorized] = authorizedOp(t, db, "a", "t").ID
	out[StateReserved] = reserveOK(t, db, "a", "t", "register_domain", "1").ID
	awaiting := reserveOK(t, db, "a", "t", "register_domain", "2")
	move(t, db, awaiting.ID, StateAwaitingApproval)
	out[StateAwaitingApproval] = awaiting.ID
	approved := reserveOK(t, db, "a", "t", "register_domain", "3")
	move(t, db, approved.ID, StateAwaitingApproval, StateApproved)
	out[StateApproved] = approved.ID
	executing := reserveOK(t, db, "a", "t", "register_domain", "4")
	if err := execute(ctx, db, executing.ID, false); err != nil {
		t.Fatal(err)
	}
	out[StateExecuting] = executing.ID
	inDoubt := reserveOK(t, db, "a", "t", "register_domain", "5")
	if err := execute(ctx, db, inDoubt.ID, false); err != nil {
		t.Fatal(err)
	}
	move(t, db, inDoubt.ID, StateInDoubt)
	out[StateInDoubt] = inDoubt.ID
	b, _ := json.Marshal(out)
	fmt.Println("OPS " + string(b))
	// Wait for the parent to kill this process; stdin closes if it dies first.
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
}

func move(t testing.TB, db *DB, id string, to ...State) {
	t.Helper()
	for _, s := range to {
		if _, err := db.Transition(context.Background(), id, s, TransitionOpts{}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReclaimOnlyDeadWork: another process (a real one, this test binary
// run again) leaves work in every live state. While it lives, however this
// process names the database — the same path or a symlink (a hard link is
// refused at open: store's TestOpenRefusesHardLinkedDatabase) — Reclaim
// touches none of it. Once it is killed with SIGKILL its lease is
// dead at once (the kernel drops its flock) and Reclaim takes everything
// over exactly once.
func TestReclaimOnlyDeadWork(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"same path", "symlink"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			dir := t.TempDir()
			path := filepath.Join(dir, "real", "tollgate.db")
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				t.Fatal(err)
			}
			key, err := LoadOrCreateAuditKey(path + ".key") // the other process's too
			if err != nil {
				t.Fatal(err)
			}
			openAt(t, path, WithAuditKey(key)).Close() // create it
			mine := path
			switch how {
			case "symlink":
				mine = filepath.Join(dir, "link.db")
				if err := os.Symlink(path, mine); err != nil {
					t.Fatal(err)
				}
			}

			child := exec.Command(os.Args[0], "-test.run=^TestReclaimHelperProcess$", "-test.v")
			child.Env = append(os.Environ(), reclaimHelperEnv+"="+path)
			child.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			stdin, _ := child.StdinPipe()
			stdout, _ := child.StdoutPipe()
			child.Stderr = os.Stderr
			if err := child.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait(); _ = stdin.Close() })
			var theirs map[State]string
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				if rest, ok := strings.CutPrefix(sc.Text(), "OPS "); ok {
					if err := json.Unmarshal([]byte(rest), &theirs); err != nil {
						t.Fatal(err)
					}
					break
				}
			}
			if len(theirs) != len(liveStates) {
				t.Fatalf("helper process reported %v", theirs)
			}

			db := openAt(t, mine, WithAuditKey(key))
			if _, err := db.StartLease(ctx); err != nil {
				t.Fatal(err)
			}
			rep, err := db.Reclaim(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Leases)+len(rep.Released)+len(rep.InDoubt)+len(rep.Approved)+len(rep.Awaiting) != 0 {
				t.Fatalf("reclaimed a live process's work: %+v", rep)
			}
			for want, id := range theirs {
				op := getOp(t, db, id)
				if op.State != want || op.LeaseID == "" || op.LeaseID == db.Lease().ID() {
					t.Fatalf("%s is %s under lease %q; want %s under the other process's", id, op.State, op.LeaseID, want)
				}
			}

			if err := child.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			_ = child.Wait()
			rep, err = db.Reclaim(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Leases) != 1 {
				t.Fatalf("dead leases %v", rep.Leases)
			}
			if got, want := ids(rep.Released), sorted(theirs[StatePlanned], theirs[StateAuthorized], theirs[StateReserved]); !slices.Equal(got, want) {
				t.Fatalf("released %v, want %v", got, want)
			}
			if got, want := ids(rep.InDoubt), sorted(theirs[StateExecuting], theirs[StateInDoubt]); !slices.Equal(got, want) {
				t.Fatalf("in_doubt %v, want %v", got, want)
			}
			if got := ids(rep.Approved); !slices.Equal(got, []string{theirs[StateApproved]}) {
				t.Fatalf("approved %v", got)
			}
			if got := ids(rep.Awaiting); !slices.Equal(got, []string{theirs[StateAwaitingApproval]}) {
				t.Fatalf("awaiting %v", got)
			}
			for _, op := range rep.Released {
				if op.State != StateFailed || op.ErrorCode != "interrupted" {
					t.Fatalf("released %+v", op)
				}
			}
			for _, id := range theirs {
				if op := getOp(t, db, id); op.LeaseID != db.Lease().ID() {
					t.Fatalf("%s (%s) still under lease %q", id, op.State, op.LeaseID)
				}
			}
			// Holds: released for the three, kept for the rest (2+3+4+5).
			if st := statusOf(t, db, TeamScope("t"), WindowDay); st.Held != usd("14") || st.Spent != usd("0") {
				t.Fatalf("status %+v", st)
			}
			mustInvariants(t, db, true)
			if n := countRows(t, db, `SELECT COUNT(*) FROM audit_events WHERE type = ?`, EventOperationReclaimed); n != len(liveStates) {
				t.Fatalf("%d reclaim events, want %d", n, len(liveStates))
			}

			// Again: nothing left to take, but the dead lease is reported
			// until the caller, having cleaned up after it, drops it.
			if _, err := db.Settle(ctx, theirs[StateExecuting], SettleRequest{Actual: usd("4")}); err != nil {
				t.Fatal(err)
			}
			rep, err = db.Reclaim(ctx)
			if err != nil || len(rep.Leases) != 1 || len(rep.Released)+len(rep.InDoubt)+len(rep.Approved)+len(rep.Awaiting) != 0 {
				t.Fatalf("second reclaim %+v %v", rep, err)
			}
			if err := db.DropLeases(ctx, rep.Leases); err != nil {
				t.Fatal(err)
			}
			if rep, err = db.Reclaim(ctx); err != nil || len(rep.Leases) != 0 {
				t.Fatalf("reclaim after the drop %+v %v", rep, err)
			}
			leases, err := db.Store().Leases(ctx)
			if err != nil || len(leases) != 1 || leases[0].ID != db.Lease().ID() {
				t.Fatalf("leases after reclaim: %+v %v", leases, err)
			}
		})
	}
}

func TestReclaimNeedsALease(t *testing.T) { t.Parallel(); eachBackend(t, testReclaimNeedsALease) }

func testReclaimNeedsALease(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	if _, err := db.Reclaim(context.Background()); err == nil || !strings.Contains(err.Error(), "no lease") {
		t.Fatalf("Reclaim without a lease: %v", err)
	}
}

// TestReclaimTakesOperationsWithoutLease: operations a process without a
// lease left behind (tollgate before leases) are dead work.
func TestReclaimTakesOperationsWithoutLease(t *testing.T) {
	t.Parallel()
	eachBackend(t, testReclaimTakesOperationsWithoutLease)
}

func testReclaimTakesOperationsWithoutLease(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openTest(t)
	setBudget(t, db, TeamScope("t"), WindowDay, "100")
	reserved := reserveOK(t, db, "a", "t", "register_domain", "1")
	if _, err := db.StartLease(ctx); err != nil {
		t.Fatal(err)
	}
	fresh := reserveOK(t, db, "a", "t", "register_domain", "2")
	rep, err := db.Reclaim(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(rep.Released); !slices.Equal(got, []string{reserved.ID}) {
		t.Fatalf("released %v", got)
	}
	if s := mustState(ctx, db, fresh.ID); s != StateReserved {
		t.Fatalf("this process's own operation is %s", s)
	}
}

func getOp(t testing.TB, db *DB, id string) Operation {
	t.Helper()
	op, err := db.Operation(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return op
}

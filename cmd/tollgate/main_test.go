package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"sync"
	"testing"

	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/ledger/store/storetest"
)

// builtBinary is the tollgate binary the tests that need real child
// processes share, built on first use and removed after the run.
var builtBinary struct {
	once sync.Once
	dir  string
	path string
	err  error
	out  []byte
}

func TestMain(m *testing.M) {
	// The default audit key lives in the user's config folder: give the
	// tests (and the processes they start) one of their own.
	cfgHome, err := os.MkdirTemp("", "tollgate-test-config-")
	if err != nil {
		panic(err)
	}
	os.Setenv("XDG_CONFIG_HOME", cfgHome)
	os.Unsetenv("TOLLGATE_AUDIT_KEY_FILE")
	code := m.Run()
	storetest.Stop()
	_ = os.RemoveAll(cfgHome)
	if builtBinary.dir != "" {
		_ = os.RemoveAll(builtBinary.dir)
	}
	os.Exit(code)
}

// tollgateBinary builds this command once per test run and returns its
// path. It is built with -race when the tests are, so a data race in a
// child process shows up in its stderr.
func tollgateBinary(t testing.TB) string {
	t.Helper()
	builtBinary.once.Do(func() {
		builtBinary.dir, builtBinary.err = os.MkdirTemp("", "tollgate-test-bin-")
		if builtBinary.err != nil {
			return
		}
		builtBinary.path = filepath.Join(builtBinary.dir, "tollgate")
		args := []string{"build", "-o", builtBinary.path}
		if raceEnabled() {
			args = append(args, "-race")
		}
		goBin, err := exec.LookPath("go")
		if err != nil {
			builtBinary.err = err
			return
		}
		cmd := exec.Command(goBin, append(args, ".")...)
		builtBinary.out, builtBinary.err = cmd.CombinedOutput()
	})
	if builtBinary.err != nil {
		t.Fatalf("build tollgate: %v\n%s", builtBinary.err, builtBinary.out)
	}
	return builtBinary.path
}

// raceEnabled reports whether this test binary was built with -race.
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" && s.Value == "true" {
			return true
		}
	}
	return false
}

// cliAuditKey is the audit key the CLI uses in these tests (the default
// location under the test's XDG_CONFIG_HOME), for tests that open the ledger
// directly on a database the CLI also writes.
func cliAuditKey(t testing.TB) *ledger.AuditKey {
	t.Helper()
	k, err := ledger.LoadOrCreateAuditKey(defaultAuditKeyPath("", false))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

// TestHealthzReportsDamagedDatabaseFiles is the health half of issue 9's
// fifth attack: once the database file or its write-ahead log is removed or
// replaced under the running server, /healthz answers 503 naming the file,
// and a mutating call is refused with the same reason instead of a vague
// "try again later".
func TestHealthzReportsDamagedDatabaseFiles(t *testing.T) {
	t.Parallel()
	for _, victim := range []string{"-wal", ""} {
		t.Run("remove"+victim, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			hs := httptest.NewServer(e.srv.Handler())
			defer hs.Close()
			health := func() (int, map[string]any) {
				resp, err := http.Get(hs.URL + "/healthz")
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				var body map[string]any
				if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
					t.Fatal(err)
				}
				return resp.StatusCode, body
			}
			if code, body := health(); code != http.StatusOK {
				t.Fatalf("healthy server: %d %v", code, body)
			}
			path := e.db.Path() + victim
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			code, body := health()
			db := fmt.Sprint(body["checks"].(map[string]any)["database"])
			if code != http.StatusServiceUnavailable || !strings.Contains(db, e.db.Path()) {
				t.Fatalf("after removing %s: %d, database check %q; want 503 naming the file", path, code, db)
			}
			res := e.call(webBot, "register_domain", registerArgs("after-damage.dev"))
			text := fmt.Sprint(res.Content)
			if !res.IsError || !strings.Contains(text, "refuses to act") || !strings.Contains(text, e.db.Path()) {
				t.Fatalf("a mutating call after the damage: %s", text)
			}
		})
	}
}

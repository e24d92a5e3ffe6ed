package tools

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/tollgatehq/tollgate/cloudflare"
)

// TestToolsCannotReachTheParentToken enforces the package boundary that keeps
// standing credentials away from executors: tools talks to Cloudflare only
// through *cloudflare.Session (a client built for one minted token), never
// through cloudflare-go directly, the broker, or the environment.
func TestToolsCannotReachTheParentToken(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		af, err := parser.ParseFile(fset, f, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasPrefix(path, "github.com/cloudflare/cloudflare-go") {
				t.Errorf("%s imports %s: tools must reach Cloudflare only through a minted cloudflare.Session", f, path)
			}
			if path == "os" || path == "syscall" {
				t.Errorf("%s imports %s: tools must not read credentials from the environment", f, path)
			}
		}
		for _, banned := range []string{"Broker", "NewBroker", "ParentToken", "CLOUDFLARE_API_TOKEN"} {
			if strings.Contains(string(src), banned) {
				t.Errorf("%s mentions %s: executors get a Session, never the broker or the parent credential", f, banned)
			}
		}
	}

	// What tools can see of a Session: no exported field or method yields a
	// token value.
	st := reflect.TypeFor[cloudflare.Session]()
	for i := range st.NumField() {
		f := st.Field(i)
		if f.IsExported() && strings.Contains(strings.ToLower(f.Name), "token") && f.Name != "TokenID" {
			t.Errorf("cloudflare.Session exports %s", f.Name)
		}
	}
	pt := reflect.TypeFor[*cloudflare.Session]()
	for i := range pt.NumMethod() {
		m := pt.Method(i)
		if strings.Contains(strings.ToLower(m.Name), "token") || strings.Contains(strings.ToLower(m.Name), "secret") {
			t.Errorf("cloudflare.Session has method %s", m.Name)
		}
	}
	bt := reflect.TypeFor[cloudflare.Broker]()
	for i := range bt.NumField() {
		if bt.Field(i).IsExported() {
			t.Errorf("cloudflare.Broker exports field %s; the parent token must stay unexported", bt.Field(i).Name)
		}
	}
}

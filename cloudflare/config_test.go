package cloudflare

import (
	"bytes"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"
)

const testAccount = "0123456789abcdef0123456789abcdef"

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	good := Config{AccountID: testAccount, ParentToken: "parent-token-value-0123456789012345678901"}
	tests := []struct {
		name string
		mod  func(*Config)
		want []string // substrings, all must appear
	}{
		{"good", func(*Config) {}, nil},
		{"good with options", func(c *Config) {
			c.APIBase, c.TokenTTL, c.RequestIP = "http://127.0.0.1:8788/client/v4", 15*time.Minute, "203.0.113.0/24"
		}, nil},
		{"empty", func(c *Config) { *c = Config{} }, []string{"AccountID", "ParentToken: required"}},
		{"everything wrong at once", func(c *Config) {
			c.APIBase, c.AccountID, c.ParentToken, c.TokenTTL, c.RequestIP = "ftp://x", "ABC", "has space", 30*time.Second, "nowhere"
			c.RetryBackoff, c.DeleteAttempts = -1, -1
		}, []string{"APIBase", "AccountID", "ParentToken: contains whitespace", "TokenTTL 30s: allowed 1m0s to 15m0s", "RequestIP", "RetryBackoff", "DeleteAttempts"}},
		{"uppercase account", func(c *Config) { c.AccountID = strings.ToUpper(testAccount) }, []string{"AccountID"}},
		{"ttl too long", func(c *Config) { c.TokenTTL = time.Hour }, []string{"TokenTTL 1h0m0s"}},
		{"relative base", func(c *Config) { c.APIBase = "/client/v4/" }, []string{"APIBase"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := good
			tc.mod(&c)
			err := c.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate accepted a bad config")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if c.ParentToken != "" && strings.Contains(err.Error(), c.ParentToken) {
				t.Error("Validate echoed the parent token")
			}
			if _, err := NewBroker(c); err == nil {
				t.Error("NewBroker accepted a config Validate refuses")
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	c := Config{AccountID: testAccount, ParentToken: "x", APIBase: "http://h/client/v4", ReadRetries: -1}.withDefaults()
	if c.APIBase != "http://h/client/v4/" || c.TokenTTL != DefaultTokenTTL || c.ReadRetries != 0 || c.DeleteAttempts != 4 ||
		c.HTTPClient == nil || c.Logger == nil || c.Clock == nil || c.PollInterval != time.Second {
		t.Fatalf("defaults: %+v", c)
	}
	if d := (Config{}).withDefaults(); d.APIBase != DefaultAPIBase || d.ReadRetries != 2 {
		t.Fatalf("zero config defaults: %+v", d)
	}
}

func TestConfigRedactsParentToken(t *testing.T) {
	t.Parallel()
	const secret = "SuperSecretParentTokenValue0123456789abc"
	c := Config{AccountID: testAccount, ParentToken: secret}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("config", "cfg", c)
	slog.New(slog.NewTextHandler(&logs, nil)).Info("config", "cfg", c)
	type wrapper struct{ C Config }
	outputs := []string{
		c.String(), fmt.Sprint(c), fmt.Sprintf("%v %+v %#v %s", c, c, c, c), fmt.Sprintf("%+v %v", &c, wrapper{c}),
		logs.String(),
	}
	for _, out := range outputs {
		if strings.Contains(out, secret) {
			t.Fatalf("parent token printed: %s", out)
		}
	}
	if !strings.Contains(c.String(), "[REDACTED]") || !strings.Contains(logs.String(), "[REDACTED]") {
		t.Fatalf("redaction marker missing: %s / %s", c.String(), logs.String())
	}
}

// TestNoExportedPathToParentToken pins the package structure that keeps the
// parent token in: Broker exports no field, Session exports only its
// descriptive fields, and neither has a method returning a bare string.
func TestNoExportedPathToParentToken(t *testing.T) {
	t.Parallel()
	bt := reflect.TypeFor[Broker]()
	for i := 0; i < bt.NumField(); i++ {
		if bt.Field(i).IsExported() {
			t.Errorf("Broker exports field %s", bt.Field(i).Name)
		}
	}
	st := reflect.TypeFor[Session]()
	var exported []string
	for i := 0; i < st.NumField(); i++ {
		if st.Field(i).IsExported() {
			exported = append(exported, st.Field(i).Name)
		}
	}
	if got := strings.Join(exported, ","); got != "Purpose,Label,TokenID,ExpiresAt,PermissionGroups,Zones" {
		t.Errorf("Session exports %s", got)
	}
	for _, typ := range []reflect.Type{reflect.TypeFor[*Broker](), reflect.TypeFor[*Session]()} {
		for i := 0; i < typ.NumMethod(); i++ {
			m := typ.Method(i)
			for o := 0; o < m.Type.NumOut(); o++ {
				if m.Type.Out(o).Kind() == reflect.String {
					t.Errorf("%s.%s returns a string", typ, m.Name)
				}
			}
		}
	}
}

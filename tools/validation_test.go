package tools

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

var testNow = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

const okModule = "export default { async fetch() { return new Response('ok') } }"

func TestRegisterDomainArguments(t *testing.T) {
	t.Parallel()
	m := registerDomain{cfg: Config{}.withDefaults()}
	reason := "landing page for the product launch"
	cases := []struct {
		name     string
		args     string
		estimate bool
		want     registerArgs
		errHas   []string
	}{
		{name: "minimal", args: `{"domain":"example.dev","reason":"` + reason + `"}`, want: registerArgs{Domain: "example.dev", Years: 1}},
		{name: "uppercase and trailing dot", args: `{"domain":"EXAMPLE.Dev.","reason":"` + reason + `","years":2,"auto_renew":true}`, want: registerArgs{Domain: "example.dev", Years: 2, AutoRenew: true}},
		{name: "idn", args: `{"domain":"bücher.dev","reason":"` + reason + `"}`, want: registerArgs{Domain: "xn--bcher-kva.dev", Years: 1}},
		{name: "estimate without reason", args: `{"domain":"example.dev"}`, estimate: true, want: registerArgs{Domain: "example.dev", Years: 1}},
		{name: "homoglyph", args: `{"domain":"gооgle.com","reason":"` + reason + `"}`, errHas: []string{"domain:", "mixes Latin and Cyrillic"}},
		{name: "empty label", args: `{"domain":"a..com","reason":"` + reason + `"}`, errHas: []string{"empty label"}},
		{name: "public suffix", args: `{"domain":"co.uk","reason":"` + reason + `"}`, errHas: []string{"public suffix"}},
		{name: "64-char label", args: `{"domain":"` + strings.Repeat("x", 64) + `.com","reason":"` + reason + `"}`, errHas: []string{"over the limit of 63"}},
		{name: "unknown field", args: `{"domain":"example.dev","reason":"` + reason + `","price":1}`, errHas: []string{"price: unknown argument", "Allowed: domain, years, auto_renew, reason, idempotency_key"}},
		{name: "wrong type years", args: `{"domain":"example.dev","reason":"` + reason + `","years":"2"}`, errHas: []string{"years: got a string", "an integer"}},
		{name: "fractional years", args: `{"domain":"example.dev","reason":"` + reason + `","years":1.5}`, errHas: []string{"years: got the fractional number 1.5"}},
		{name: "years out of range", args: `{"domain":"example.dev","reason":"` + reason + `","years":11}`, errHas: []string{"years: 11 is out of range", "1 to 10"}},
		{name: "zero years", args: `{"domain":"example.dev","reason":"` + reason + `","years":0}`, errHas: []string{"years: 0 is out of range"}},
		{name: "wrong type domain", args: `{"domain":42,"reason":"` + reason + `"}`, errHas: []string{"domain: got a number", "a string"}},
		{name: "missing reason", args: `{"domain":"example.dev"}`, errHas: []string{"reason: is required"}},
		{name: "short reason", args: `{"domain":"example.dev","reason":"cheap"}`, errHas: []string{"reason: 5 characters", "10 to 500"}},
		{name: "invisible reason", args: `{"domain":"example.dev","reason":"ok\u200b\u200b\u200b\u200b\u200b\u200b\u200b\u202e\n\t"}`, errHas: []string{"reason: 12 characters but only 2 visible"}},
		{name: "long reason", args: `{"domain":"example.dev","reason":"` + strings.Repeat("r", 501) + `"}`, errHas: []string{"reason: 501 characters"}},
		{name: "bad key", args: `{"domain":"example.dev","reason":"` + reason + `","idempotency_key":"a b"}`, errHas: []string{"idempotency_key:", "A-Z a-z 0-9"}},
		{name: "not an object", args: `["example.dev"]`, errHas: []string{"arguments must be a JSON object"}},
		{name: "several problems at once", args: `{"domain":"a..com","reason":"x","years":99}`, errHas: []string{"domain:", "years:", "reason:"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			call, err := m.normalize(json.RawMessage(tc.args), tc.estimate, testNow)
			if len(tc.errHas) > 0 {
				if err == nil {
					t.Fatalf("accepted %s as %s", tc.args, call.Args)
				}
				if !IsInputError(err) {
					t.Fatalf("error %T is not an input error: %v", err, err)
				}
				for _, want := range tc.errHas {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not contain %q", err, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got registerArgs
			if err := json.Unmarshal(call.Args, &got); err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("normalised to %+v, want %+v", got, tc.want)
			}
			if call.Resource != "domain:"+tc.want.Domain || len(call.ArgsHash) != 64 {
				t.Fatalf("resource %q hash %q", call.Resource, call.ArgsHash)
			}
		})
	}
}

func TestRegisterDomainHashBindsNormalisedArguments(t *testing.T) {
	t.Parallel()
	m := registerDomain{}
	a, err := m.normalize(json.RawMessage(`{"domain":"EXAMPLE.dev.","reason":"one reason for it"}`), false, testNow)
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.normalize(json.RawMessage(`{"domain":"example.dev","years":1,"reason":"another reason entirely"}`), false, testNow)
	if err != nil {
		t.Fatal(err)
	}
	c, err := m.normalize(json.RawMessage(`{"domain":"example.dev","years":2,"reason":"one reason for it"}`), false, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if a.ArgsHash != b.ArgsHash {
		t.Fatal("equal normalised arguments must bind to the same hash (the reason is not an argument)")
	}
	if a.ArgsHash == c.ArgsHash {
		t.Fatal("different terms must not share a binding")
	}
}

func TestDeployWorkerArguments(t *testing.T) {
	t.Parallel()
	m := deployWorker{cfg: Config{}.withDefaults()}
	reason := "ship the reviewed landing page"
	args := func(over map[string]any) string {
		base := map[string]any{"script_name": "web-app", "module": okModule, "compatibility_date": "2025-01-01", "environment": "preview", "reason": reason}
		for k, v := range over {
			if v == nil {
				delete(base, k)
			} else {
				base[k] = v
			}
		}
		b, _ := json.Marshal(base)
		return string(b)
	}
	cases := []struct {
		name   string
		args   string
		deploy string
		size   int    // of the module, when not okModule
		date   string // the compatibility date bound, when not 2025-01-01
		errHas []string
	}{
		{name: "preview", args: args(nil), deploy: "web-app-preview"},
		{name: "production", args: args(map[string]any{"environment": "production"}), deploy: "web-app"},
		{name: "3 MiB module", args: args(map[string]any{"module": "export default {}\n" + strings.Repeat("/", 3<<20-18)}), deploy: "web-app-preview", size: 3 << 20},
		{name: "3 MiB and a byte", args: args(map[string]any{"module": "export default {}\n" + strings.Repeat("/", 3<<20-17)}), errHas: []string{"module: is 3145729 bytes, over the limit of 3145728", "at most 3 MiB"}},
		{name: "no date is today's", args: args(map[string]any{"compatibility_date": nil}), deploy: "web-app-preview", date: testNow.UTC().Format(time.DateOnly)},
		{name: "empty module", args: args(map[string]any{"module": ""}), errHas: []string{"module: is empty"}},
		{name: "not an ES module", args: args(map[string]any{"module": "addEventListener('fetch', e => e.respondWith(new Response('x')))"}), errHas: []string{"no export statement"}},
		{name: "upper-case name", args: args(map[string]any{"script_name": "Web-App"}), errHas: []string{"script_name:", "lower-case letters"}},
		{name: "name too long", args: args(map[string]any{"script_name": strings.Repeat("a", 64)}), errHas: []string{"script_name:"}},
		{name: "leading hyphen", args: args(map[string]any{"script_name": "-web"}), errHas: []string{"script_name:", "starting and ending with a letter or digit"}},
		{name: "hyphens only", args: args(map[string]any{"script_name": "--"}), errHas: []string{"script_name:", "is not a valid Worker name"}},
		{name: "preview suffix too long", args: args(map[string]any{"script_name": strings.Repeat("a", 60)}), errHas: []string{"at most 55 characters for preview"}},
		{name: "bad environment", args: args(map[string]any{"environment": "staging"}), errHas: []string{`environment: "staging" is not an environment`, "preview or production"}},
		{name: "bad date", args: args(map[string]any{"compatibility_date": "2025-13-01"}), errHas: []string{"compatibility_date:", "not a real date"}},
		{name: "future date", args: args(map[string]any{"compatibility_date": "2030-01-01"}), errHas: []string{"in the future"}},
		{name: "date format", args: args(map[string]any{"compatibility_date": "01/02/2025"}), errHas: []string{"YYYY-MM-DD"}},
		{name: "unknown field", args: args(map[string]any{"routes": []string{"x"}}), errHas: []string{"routes: unknown argument"}},
		{name: "wrong type", args: args(map[string]any{"module": 7}), errHas: []string{"module: got a number"}},
		{name: "missing fields", args: `{"script_name":"web-app"}`, errHas: []string{"module: is required", "environment: is required", "reason: is required"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			call, err := m.normalize(json.RawMessage(tc.args), false, testNow)
			if len(tc.errHas) > 0 {
				if err == nil || !IsInputError(err) {
					t.Fatalf("want an input error, got %v", err)
				}
				for _, want := range tc.errHas {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not contain %q", err, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got deployArgs
			if err := json.Unmarshal(call.Args, &got); err != nil {
				t.Fatal(err)
			}
			size, date := len(okModule), "2025-01-01"
			if tc.size != 0 {
				size = tc.size
			}
			if tc.date != "" {
				date = tc.date
			}
			if got.DeployedName != tc.deploy || got.ModuleSize != size || len(got.ModuleSHA256) != 64 || got.CompatibilityDate != date {
				t.Fatalf("normalised %+v", got)
			}
			if strings.Contains(string(call.Args), "fetch") {
				t.Fatal("the module source must not be stored in the arguments")
			}
			if len(call.Blob) != size {
				t.Fatal("the module travels as the blob")
			}
		})
	}
}

func TestEstimateCostArguments(t *testing.T) {
	t.Parallel()
	muts := map[string]normalizer{registerDomainName: registerDomain{}, deployWorkerName: deployWorker{}}
	names := []string{registerDomainName, deployWorkerName}
	for _, tc := range []struct{ args, want string }{
		{`{"action":"delete_zone","params":{}}`, `action: "delete_zone" is not a tool that costs money`},
		{`{"action":"register_domain","params":{"domain":"a..com"}}`, `params.domain:`},
		{`{"action":"register_domain","params":{"domain":"example.dev","yearz":1}}`, `params.yearz: unknown argument`},
		{`{"action":"register_domain"}`, `params: is required`},
		{`{"action":"deploy_worker","params":{"script_name":"web-app","module":"x","compatibility_date":"2025-01-01","environment":"preview"}}`, `params.module: has no export statement`},
		{`{"action":"deploy_worker","params":{"domain":"example.dev"}}`, `params.domain: unknown argument`},
	} {
		a, err := decodeArgs[EstimateCostArgs](json.RawMessage(tc.args))
		if err == nil {
			_, _, err = normalizeEstimate(muts, names, a, testNow)
		}
		if err == nil || !IsInputError(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v does not contain %q", tc.args, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "reason: is required") {
			t.Errorf("%s: an estimate needs no reason, but the error asks for one: %v", tc.args, err)
		}
	}

	// What an estimate needs is only what prices the call: no reason, no
	// idempotency key, no compatibility date (today's is used and echoed).
	for _, tc := range []struct{ action, params, want string }{
		{registerDomainName, `{"domain":"example.dev"}`, `{"domain":"example.dev","years":1,"auto_renew":false}`},
		{registerDomainName, `{"domain":"example.dev","years":2,"reason":"a reason that is long enough","idempotency_key":"k1"}`, `{"domain":"example.dev","years":2,"auto_renew":false}`},
		{deployWorkerName, `{"script_name":"web-app","module":` + strconv.Quote(okModule) + `,"environment":"preview"}`, `"compatibility_date":"` + testNow.UTC().Format(time.DateOnly) + `"`},
	} {
		_, call, err := normalizeEstimate(muts, names, EstimateCostArgs{Action: tc.action, Params: json.RawMessage(tc.params)}, testNow)
		if err != nil || !strings.Contains(string(call.Args), strings.Trim(tc.want, "{}")) {
			t.Errorf("%s %s: %v, args %s, want %s", tc.action, tc.params, err, call.Args, tc.want)
		}
	}
}

// TestEstimateParamsSchemaPerAction: estimate_cost's params is one schema
// per action, each that tool's own arguments with reason and
// idempotency_key optional, so a model never guesses its shape.
func TestEstimateParamsSchemaPerAction(t *testing.T) {
	t.Parallel()
	var in struct {
		Properties struct {
			Params struct {
				Type  string `json:"type"`
				AnyOf []struct {
					Title                string          `json:"title"`
					Required             []string        `json:"required"`
					Properties           map[string]any  `json:"properties"`
					AdditionalProperties json.RawMessage `json:"additionalProperties"`
				} `json:"anyOf"`
			} `json:"params"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(EstimateCost(nil, Config{}).Tool.RawInputSchema, &in); err != nil {
		t.Fatal(err)
	}
	p := in.Properties.Params
	if p.Type != "object" || len(p.AnyOf) != 2 {
		t.Fatalf("params schema %+v", p)
	}
	want := map[string][]string{
		"params for register_domain": {"domain"},
		"params for deploy_worker":   {"script_name", "module", "environment"},
	}
	for _, branch := range p.AnyOf {
		req, ok := want[branch.Title]
		if !ok || !slices.Equal(branch.Required, req) || string(branch.AdditionalProperties) != "false" {
			t.Errorf("branch %q: required %v (want %v), additionalProperties %s", branch.Title, branch.Required, req, branch.AdditionalProperties)
		}
		if _, ok := branch.Properties["reason"]; !ok {
			t.Errorf("branch %q does not accept a reason (a real call's arguments must estimate as they are)", branch.Title)
		}
	}
}

func FuzzDecodeRegisterArgs(f *testing.F) {
	for _, s := range []string{`{}`, `{"domain":"example.dev","reason":"0123456789"}`, `{"years":1e400}`, `[]`, `null`, `{"domain":{"x":1}}`, `{"domain":"a","domain":"b"}`} {
		f.Add(s)
	}
	m := registerDomain{}
	f.Fuzz(func(t *testing.T, raw string) {
		call, err := m.normalize(json.RawMessage(raw), false, testNow)
		if err != nil {
			if !IsInputError(err) {
				t.Fatalf("non-input error %T: %v", err, err)
			}
			return
		}
		var a registerArgs
		if json.Unmarshal(call.Args, &a) != nil || a.Years < 1 || a.Years > 10 {
			t.Fatalf("accepted invalid %s as %s", raw, call.Args)
		}
	})
}

// TestAttackScriptNameEndingInHyphen: "web-" would deploy its previews as
// "web--preview"; a name must end in a letter or digit.
func TestAttackScriptNameEndingInHyphen(t *testing.T) {
	t.Parallel()
	m := deployWorker{cfg: Config{}.withDefaults()}
	for _, name := range []string{"web-", "web--", "a-"} {
		args, _ := json.Marshal(map[string]any{"script_name": name, "module": okModule, "compatibility_date": "2025-01-01", "environment": "preview", "reason": "preview of the landing page"})
		_, err := m.normalize(args, false, testNow)
		if err == nil || !IsInputError(err) {
			t.Fatalf("script_name %q accepted: %v", name, err)
		}
		if want := name + "-preview"; !strings.Contains(err.Error(), "ends in a hyphen") || !strings.Contains(err.Error(), want) {
			t.Errorf("script_name %q: %v; want it to say it ends in a hyphen and would deploy as %s", name, err, want)
		}
	}
	if !scriptNameRE.MatchString("web-app") || !scriptNameRE.MatchString("a") || !scriptNameRE.MatchString(strings.Repeat("a", 63)) || scriptNameRE.MatchString(strings.Repeat("a", 64)) {
		t.Fatal("the name pattern no longer accepts 1-63 characters")
	}
}

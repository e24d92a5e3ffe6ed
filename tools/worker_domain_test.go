package tools

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestAttachWorkerDomainArguments(t *testing.T) {
	t.Parallel()
	const okReason = `"reason":"serve the launch page from the shop Worker"`
	for _, tc := range []struct{ args, want string }{
		{`{"script_name":"web-site","hostname":"*.shop.dev","environment":"production",` + okReason + `}`, "hostname:"},
		{`{"script_name":"web-site","hostname":"gооgle.com","environment":"production",` + okReason + `}`, "mixes Latin and Cyrillic"},
		{`{"script_name":"web-site","hostname":"co.uk","environment":"production",` + okReason + `}`, "public suffix itself"},
		{`{"script_name":"web-site-preview","hostname":"shop.dev","environment":"preview",` + okReason + `}`, "script_name:"},
		{`{"script_name":"web-site","hostname":"shop.dev","environment":"staging",` + okReason + `}`, `environment: "staging" is not an environment`},
		{`{"script_name":"web-site","hostname":"shop.dev","environment":"preview"}`, "reason: is required"},
		{`{"script_name":"web-site","hostname":"shop.dev","environment":"preview","zone_id":"x",` + okReason + `}`, "zone_id: unknown argument"},
	} {
		_, err := attachWorkerDomain{}.normalize(json.RawMessage(tc.args), false, testNow)
		if err == nil || !IsInputError(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v does not contain %q", tc.args, err, tc.want)
		}
	}
	for _, tc := range []struct {
		args, hostname, deployed string
		apex, approval           bool
	}{
		{`{"script_name":"web-site","hostname":"WWW.Shop.Dev.","environment":"preview",` + okReason + `}`, "www.shop.dev", "web-site-preview", false, false},
		{`{"script_name":"web-site","hostname":"shop.dev","environment":"preview",` + okReason + `}`, "shop.dev", "web-site-preview", true, true},
		{`{"script_name":"web-site","hostname":"www.shop.dev","environment":"production",` + okReason + `}`, "www.shop.dev", "web-site", false, true},
		{`{"script_name":"web-site","hostname":"www.bücher.dev","environment":"preview",` + okReason + `}`, "www.xn--bcher-kva.dev", "web-site-preview", false, false},
	} {
		call, err := attachWorkerDomain{}.normalize(json.RawMessage(tc.args), false, testNow)
		if err != nil {
			t.Fatalf("%s: %v", tc.args, err)
		}
		a, h, err := decodeDomainArgs(call.Args)
		if err != nil || h.FQDN != tc.hostname || a.Apex != tc.apex || a.DeployedName != tc.deployed || call.Resource != "worker_domain:"+tc.hostname {
			t.Errorf("%s: %+v %+v %v", tc.args, a, h, err)
		}
		if got := (attachWorkerDomain{}).AlwaysNeedsApproval(call.Args); got != tc.approval {
			t.Errorf("%s: approval %v, want %v", tc.args, got, tc.approval)
		}
	}
}

func TestDetachWorkerDomainArguments(t *testing.T) {
	t.Parallel()
	_, err := detachWorkerDomain{}.normalize(json.RawMessage(`{"hostname":"shop..dev","reason":"x"}`), false, testNow)
	if err == nil || !strings.Contains(err.Error(), "hostname:") || !strings.Contains(err.Error(), "reason:") {
		t.Fatalf("every problem at once: %v", err)
	}
	call, err := detachWorkerDomain{}.normalize(json.RawMessage(`{"hostname":"Shop.dev","reason":"the campaign is over now"}`), false, testNow)
	if err != nil || string(call.Args) != `{"hostname":"shop.dev","domain":"shop.dev","apex":true}` {
		t.Fatalf("%s %v", call.Args, err)
	}
	if !(detachWorkerDomain{}).AlwaysNeedsApproval(call.Args) {
		t.Fatal("a detach must always wait for a human")
	}
}

func FuzzNormalizeHostname(f *testing.F) {
	for _, s := range []string{"www.example.dev", "example.dev", "*.x.dev", "bücher.dev", "a..b", "xn--80ak6aa92e.com", "co.uk"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		h, err := NormalizeHostname(raw)
		if err != nil {
			if !IsInputError(err) {
				t.Fatalf("%q: not an input error: %v", raw, err)
			}
			return
		}
		if h.FQDN == "" || h.Domain == "" || !(h.FQDN == h.Domain || strings.HasSuffix(h.FQDN, "."+h.Domain)) || h.Apex != (h.FQDN == h.Domain) {
			t.Fatalf("%q: %+v", raw, h)
		}
		again, err := NormalizeHostname(h.FQDN)
		if err != nil || again != h {
			t.Fatalf("%q: not stable: %+v then %+v %v", raw, h, again, err)
		}
	})
}

// BenchmarkNormalizeHostname measures a hostname's normalisation beside
// the domain normalisation it shares its rules with.
func BenchmarkNormalizeHostname(b *testing.B) {
	for _, name := range []string{"www.example.dev", "www.xn--bcher-kva.dev"} {
		b.Run("hostname/"+name, func(b *testing.B) {
			for b.Loop() {
				if _, err := NormalizeHostname(name); err != nil {
					b.Fatal(err)
				}
			}
		})
		dom := strings.TrimPrefix(name, "www.")
		b.Run("domain/"+dom, func(b *testing.B) {
			for b.Loop() {
				if _, err := NormalizeDomain(dom); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

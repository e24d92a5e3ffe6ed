package tools

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/tollgatehq/tollgate/cloudflare"
)

func TestDeployRolloutArguments(t *testing.T) {
	t.Parallel()
	base := `{"script_name":"web-site","module":` + strconv.Quote(okModule) + `,"reason":"promote the new landing page",`
	for _, tc := range []struct{ args, want string }{
		{base + `"environment":"preview","rollout":{"steps":[10,100],"interval":"5m"}}`, "rollout: given with environment \"preview\""},
		{base + `"environment":"production","rollout":{"steps":[10,50],"interval":"5m"}}`, "the last step is 50%, not 100%"},
		{base + `"environment":"production","rollout":{"steps":[50,10,100],"interval":"5m"}}`, "step 2 (10%) does not increase on step 1 (50%)"},
		{base + `"environment":"production","rollout":{"steps":[0,100],"interval":"5m"}}`, "step 1 is 0%"},
		{base + `"environment":"production","rollout":{"steps":[],"interval":"5m"}}`, "rollout.steps: 0 steps"},
		{base + `"environment":"production","rollout":{"steps":[1,2,3,4,5,6,7,8,9,10,100],"interval":"5m"}}`, "rollout.steps: 11 steps"},
		{base + `"environment":"production","rollout":{"steps":[10,100],"interval":"1s"}}`, "rollout.interval: 1s is out of range"},
		{base + `"environment":"production","rollout":{"steps":[10,100],"interval":"48h"}}`, "rollout.interval: 48h0m0s is out of range"},
		{base + `"environment":"production","rollout":{"steps":[10,100],"interval":"soon"}}`, `rollout.interval: "soon" is not a duration`},
		{base + `"environment":"production","rollout":{"steps":[10,100],"interval":"5500ms"}}`, "is not whole seconds"},
	} {
		_, err := deployWorker{}.normalize(json.RawMessage(tc.args), false, testNow)
		if err == nil || !IsInputError(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v does not contain %q", tc.args, err, tc.want)
		}
	}
	call, err := deployWorker{}.normalize(json.RawMessage(base+`"environment":"production","rollout":{"steps":[10,50,100],"interval":"5m"}}`), false, testNow)
	if err != nil || !strings.Contains(string(call.Args), `"rollout":{"steps":[10,50,100],"interval_seconds":300}`) {
		t.Fatalf("%s %v", call.Args, err)
	}
	// Without a rollout the bound arguments are what they always were.
	plain, err := deployWorker{}.normalize(json.RawMessage(base+`"environment":"production"}`), false, testNow)
	if err != nil || strings.Contains(string(plain.Args), "rollout") {
		t.Fatalf("%s %v", plain.Args, err)
	}
	res, err := deployWorker{}.PreResource(call.Args)
	if err != nil || res.Attr["rollout_interval_seconds"] != int64(300) || len(res.Attr["rollout_steps"].([]any)) != 3 {
		t.Fatalf("%+v %v", res, err)
	}
}

func FuzzRolloutArguments(f *testing.F) {
	f.Add(`{"steps":[10,50,100],"interval":"5m"}`)
	f.Add(`{"steps":[100],"interval":"5s"}`)
	f.Add(`{"steps":[1,2,100],"interval":"1h30m"}`)
	f.Fuzz(func(t *testing.T, raw string) {
		var r RolloutArgs
		if json.Unmarshal([]byte(raw), &r) != nil {
			return
		}
		p, errs := checkRollout(&r, "production")
		if len(errs) > 0 {
			if p != nil {
				t.Fatal("a plan with errors")
			}
			return
		}
		if len(p.Steps) == 0 || len(p.Steps) > maxRolloutSteps || p.Steps[len(p.Steps)-1] != 100 || p.interval() < minRolloutInterval || p.interval() > maxRolloutInterval {
			t.Fatalf("accepted %s as %+v", raw, p)
		}
		for i := 1; i < len(p.Steps); i++ {
			if p.Steps[i] <= p.Steps[i-1] || p.Steps[i-1] < 1 {
				t.Fatalf("accepted %s as %+v", raw, p)
			}
		}
	})
}

func TestLiveVersions(t *testing.T) {
	t.Parallel()
	nums := map[string]int{"v1": 1, "v2": 2, "v3": 3}
	one := func(id string) cloudflare.ScriptDeployment {
		return cloudflare.ScriptDeployment{Traffic: []cloudflare.TrafficShare{{VersionID: id, Percentage: 100}}}
	}
	split := cloudflare.ScriptDeployment{Traffic: []cloudflare.TrafficShare{{VersionID: "v3", Percentage: 10}, {VersionID: "v2", Percentage: 90}}}
	for _, tc := range []struct {
		deps           []cloudflare.ScriptDeployment
		newest, before string
	}{
		{nil, "", ""},
		{[]cloudflare.ScriptDeployment{one("v1")}, "v1", ""},
		{[]cloudflare.ScriptDeployment{one("v2"), one("v1")}, "v2", "v1"},
		{[]cloudflare.ScriptDeployment{split, one("v2"), one("v1")}, "v3", "v2"},
		{[]cloudflare.ScriptDeployment{one("v3"), split, one("v2"), one("v1")}, "v3", "v2"},
		{[]cloudflare.ScriptDeployment{one("v2"), one("v3"), split, one("v2")}, "v2", "v3"},
	} {
		_, n, b := liveVersions(tc.deps, nums)
		if n != tc.newest || b != tc.before {
			t.Errorf("%+v: newest %q before %q, want %q %q", tc.deps, n, b, tc.newest, tc.before)
		}
	}
}

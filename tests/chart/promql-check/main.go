// Command promql-check checks the chart's alert rules and Grafana dashboard with Prometheus'
// own code (the module pinned in go.mod):
//
//   - the rendered PrometheusRule's groups load with rulefmt (what prometheus-operator's
//     admission webhook and `promtool check rules` run): valid PromQL, valid alert templates;
//   - every series selector in the rules and the dashboard names a metric the operator exposes
//     (or up / kube_lease_renew_time), matches only labels that metric has, and compares the
//     enumerated labels (phase, type, status, reason, result, remedy) only with values the
//     operator's source actually writes;
//   - the PromQL engine evaluates every alert over synthetic scrapes (fixtures/*.prom, one
//     hour of samples): each scenario fires exactly the alerts it should; and every dashboard
//     query returns data on the "trouble" scenario (so no panel is silently empty).
//
// Usage: promql-check -rules rule.yaml -dashboard dashboard.json -fixtures dir -src dir
//
//	-job J -lease-namespace N -lease L
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
	"go.yaml.in/yaml/v3"
)

// The operator's metrics and their labels (src/metrics.rs), plus the two foreign series the
// rules use. Target labels a scrape adds are allowed on every metric.
var metricLabels = map[string][]string{
	"lfu_reconciles_total":                  {},
	"lfu_reconcile_failures_total":          {"kind"},
	"lfu_reconcile_duration_seconds_bucket": {"le"},
	"lfu_reconcile_duration_seconds_sum":    {},
	"lfu_reconcile_duration_seconds_count":  {},
	"lfu_upgrade_phase":                     {"namespace", "name", "phase"},
	"lfu_upgrade_condition":                 {"namespace", "name", "type", "status", "reason"},
	"lfu_migration_progress_ratio":          {"namespace", "name", "migration"},
	"lfu_migration_rows_per_second":         {"namespace", "name", "migration"},
	"lfu_migration_eta_seconds":             {"namespace", "name", "migration"},
	"lfu_remedies_total":                    {"namespace", "name", "remedy"},
	"lfu_preflight_check":                   {"namespace", "name", "check", "result"},
	"up":                                    {},
	"kube_lease_renew_time":                 {"namespace", "lease"},
}

var targetLabels = []string{"job", "instance", "namespace", "pod", "service", "endpoint", "container"}

// Values the operator writes for the enumerated labels (checked against -src, so a renamed
// phase or reason in the code fails here instead of silently never alerting). Condition
// status is only ever True or False (the operator writes no Unknown).
var enums = map[string][]string{
	"phase": {"Pending", "Provisioning", "AwaitingPromotion", "ShiftingTraffic", "Draining",
		"Migrating", "Verifying", "RetiringSource", "Finalizing", "Completed", "Paused", "Blocked",
		"Degraded", "RollingBack", "RolledBack", "Failed"},
	"type": {"Ready", "Reconciling", "Stalled", "PreflightPassed", "TrafficShifted", "MigrationsComplete",
		"Verified", "SourceRetired"},
	"status": {"True", "False"},
	"reason": {"InvalidSpec", "Pending", "PreflightRunning", "PreflightFailed", "ChecksPassed", "Provisioning",
		"WebNotAvailable", "AwaitingApproval", "Shifting", "Shifted", "NotShifted", "SelectorReverted",
		"SourceMissing", "Draining", "PostgresUnavailable", "ClickHouseUnavailable", "Migrating",
		"MigrationFailed", "MigrationStalled", "MigrationsFinished", "MigrationStuck", "RemedyApplied",
		"NotStarted", "Verifying", "CountsMatch", "CountsMismatch", "LateWrites", "WaitingToRetire",
		"Retiring", "Retired", "SourceScaledUp", "Finalizing", "Completed", "Paused", "RollingBack",
		"RolledBack", "AbortTooLate"},
	"result": {"Pass", "Warn", "Fail", "Skipped"},
	"remedy": {"batchSize", "clearFailure", "rerunWindow", "workerRestart"},
	"kind":   {"kube", "conflict", "forbidden", "not_found", "database"},
}

var failures []string

func fail(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	failures = append(failures, msg)
	fmt.Fprintln(os.Stderr, "FAIL:", msg)
}

var promParser = parser.NewParser(parser.Options{})

func main() {
	rulesFile := flag.String("rules", "", "rendered PrometheusRule (YAML)")
	dashFile := flag.String("dashboard", "", "Grafana dashboard JSON")
	fixtures := flag.String("fixtures", "", "directory with trouble.prom and healthy.prom")
	srcDir := flag.String("src", "", "the operator's src/ (to check the enumerated label values)")
	job := flag.String("job", "", "job label of the operator's series")
	leaseNS := flag.String("lease-namespace", "", "namespace of the leader Lease")
	lease := flag.String("lease", "", "name of the leader Lease")
	flag.Parse()
	if *rulesFile == "" || *dashFile == "" || *fixtures == "" || *srcDir == "" || *job == "" || *leaseNS == "" || *lease == "" {
		flag.Usage()
		os.Exit(2)
	}

	checkEnumsInSource(*srcDir)
	groups := loadRules(*rulesFile)
	var alerts []rulefmt.Rule
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			checkSelectors("rule "+r.Alert+r.Record, r.Expr)
			if r.Alert != "" {
				alerts = append(alerts, r)
			}
		}
	}
	queries := dashboardQueries(*dashFile)
	for _, q := range queries {
		checkSelectors("dashboard "+q.where, q.expr)
	}

	now := time.Unix(1_800_000_000, 0)
	load := func(name string) []string {
		if name == "" {
			return nil
		}
		return readFixture(filepath.Join(*fixtures, name))
	}
	allAlerts := []string{}
	for _, a := range alerts {
		allAlerts = append(allAlerts, a.Alert)
	}
	scenarios := []struct {
		name, fixture string
		up, leaseAge  int // replicas scraped; seconds since the Lease was renewed (<0: no Lease)
		firing        []string
	}{
		{"upgrades in trouble", "trouble.prom", 2, 5, []string{
			"LangfuseUpgradeFailed", "LangfuseUpgradeMigrationStuck", "LangfuseUpgradeBlocked",
			"LangfuseUpgradeSelectorReverted", "LangfuseUpgradeDegraded", "LangfuseUpgradeReconcileFailures"}},
		{"healthy", "healthy.prom", 2, 5, nil},
		{"operator gone, Lease stale", "", 0, 600, []string{"LangfuseUpgradeOperatorDown", "LangfuseUpgradeOperatorNotLeading"}},
	}
	for _, sc := range scenarios {
		store := newStore(load(sc.fixture), *job, sc.up, *leaseNS, *lease, sc.leaseAge, now)
		var got []string
		for _, a := range alerts {
			if n := eval(store, a.Expr, now); n < 0 {
				fail("alert %s: evaluation failed", a.Alert)
			} else if n > 0 {
				got = append(got, a.Alert)
			}
		}
		want := intersect(sc.firing, allAlerts)
		sort.Strings(got)
		sort.Strings(want)
		if strings.Join(got, ",") != strings.Join(want, ",") {
			fail("scenario %q: firing %v, want %v", sc.name, got, want)
		} else {
			fmt.Printf("ok: scenario %q fires %v\n", sc.name, got)
		}
		if sc.fixture == "trouble.prom" {
			empty := 0
			for _, q := range queries {
				if n := eval(store, q.expr, now); n <= 0 {
					fail("dashboard %s returns no data on the trouble scenario: %s", q.where, q.expr)
					empty++
				}
			}
			if empty == 0 {
				fmt.Printf("ok: all %d dashboard queries return data\n", len(queries))
			}
		}
	}
	if len(failures) > 0 {
		fmt.Fprintf(os.Stderr, "promql-check: %d failure(s)\n", len(failures))
		os.Exit(1)
	}
	fmt.Printf("ok: %d alert rules and %d dashboard queries checked\n", len(alerts), len(queries))
}

func intersect(a, b []string) []string {
	var out []string
	for _, x := range a {
		for _, y := range b {
			if x == y {
				out = append(out, x)
			}
		}
	}
	return out
}

// checkEnumsInSource: every enumerated value above appears as a string literal in src/.
func checkEnumsInSource(dir string) {
	var text strings.Builder
	_ = filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && strings.HasSuffix(p, ".rs") {
			b, _ := os.ReadFile(p)
			text.Write(b)
		}
		return nil
	})
	src := text.String()
	for label, values := range enums {
		for _, v := range values {
			// A string literal, or an enum variant the operator prints with {:?} (CheckResult).
			variant := regexp.MustCompile(`\b` + regexp.QuoteMeta(v) + `\b,`)
			if !strings.Contains(src, strconv.Quote(v)) && !variant.MatchString(src) {
				fail("label %s value %q appears nowhere in %s (renamed in the operator?)", label, v, dir)
			}
		}
	}
}

func loadRules(file string) *rulefmt.RuleGroups {
	b, err := os.ReadFile(file)
	if err != nil {
		fail("%v", err)
		exit()
	}
	var obj struct {
		Kind string         `yaml:"kind"`
		Spec map[string]any `yaml:"spec"`
	}
	if err := yaml.Unmarshal(b, &obj); err != nil || obj.Kind != "PrometheusRule" {
		fail("%s is not a PrometheusRule (%v)", file, err)
		exit()
	}
	spec, _ := yaml.Marshal(obj.Spec)
	groups, errs := rulefmt.Parse(spec, false, model.UTF8Validation, promParser, slog.New(slog.DiscardHandler))
	for _, e := range errs {
		fail("rules: %v", e)
	}
	if groups == nil {
		exit()
	}
	n := 0
	for _, g := range groups.Groups {
		n += len(g.Rules)
	}
	fmt.Printf("ok: rulefmt loads %d group(s), %d rule(s)\n", len(groups.Groups), n)
	return groups
}

type query struct{ where, expr string }

var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h",
	"$job", ".*", "$namespace", ".*", "$name", ".*",
)

// dashboardQueries: every panel target and every variable query, Grafana variables replaced.
func dashboardQueries(file string) []query {
	b, err := os.ReadFile(file)
	if err != nil {
		fail("%v", err)
		exit()
	}
	var d struct {
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		fail("dashboard: %v", err)
		exit()
	}
	var out []query
	var walk func(raw []json.RawMessage)
	walk = func(raw []json.RawMessage) {
		for _, r := range raw {
			var p struct {
				Title   string            `json:"title"`
				Panels  []json.RawMessage `json:"panels"`
				Targets []struct {
					Expr  string `json:"expr"`
					RefID string `json:"refId"`
				} `json:"targets"`
			}
			if err := json.Unmarshal(r, &p); err != nil {
				fail("dashboard panel: %v", err)
				continue
			}
			for _, t := range p.Targets {
				out = append(out, query{fmt.Sprintf("panel %q/%s", p.Title, t.RefID), grafanaVars.Replace(t.Expr)})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	labelValues := regexp.MustCompile(`^label_values\((.*),\s*([a-zA-Z_]+)\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q := ""
		switch x := v.Query.(type) {
		case string:
			q = x
		case map[string]any:
			q, _ = x["query"].(string)
		}
		m := labelValues.FindStringSubmatch(q)
		if m == nil {
			fail("dashboard variable %s: unsupported query %q", v.Name, q)
			continue
		}
		out = append(out, query{"variable " + v.Name, grafanaVars.Replace(m[1])})
	}
	return out
}

func checkSelectors(where, expr string) {
	e, err := promParser.ParseExpr(expr)
	if err != nil {
		fail("%s: %v", where, err)
		return
	}
	parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		allowed, known := metricLabels[vs.Name]
		if !known {
			fail("%s: unknown metric %q", where, vs.Name)
			return nil
		}
		for _, m := range vs.LabelMatchers {
			if m.Name == labels.MetricName {
				continue
			}
			if !contains(allowed, m.Name) && !contains(targetLabels, m.Name) {
				fail("%s: %s has no label %q", where, vs.Name, m.Name)
				continue
			}
			values, enumerated := enums[m.Name]
			if !enumerated || !contains(allowed, m.Name) {
				continue
			}
			var literals []string
			switch m.Type {
			case labels.MatchEqual, labels.MatchNotEqual:
				literals = []string{m.Value}
			default:
				if regexp.MustCompile(`^[A-Za-z_|]+$`).MatchString(m.Value) {
					literals = strings.Split(m.Value, "|")
				}
			}
			for _, l := range literals {
				if !contains(values, l) {
					fail("%s: %s{%s} compares with %q, which the operator never writes", where, vs.Name, m.Name, l)
				}
			}
		}
		return nil
	})
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// readFixture: `series value` lines; comments and blank lines skipped. Every series must be
// one the operator exposes, with exactly its labels.
func readFixture(file string) []string {
	f, err := os.Open(file)
	if err != nil {
		fail("%v", err)
		exit()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		lines = append(lines, line)
	}
	return lines
}

// --- an in-memory storage: one hour of samples every 15 s per series -----------------------

type sample struct {
	t int64
	f float64
}

func (s sample) T() int64                      { return s.t }
func (s sample) ST() int64                     { return 0 }
func (s sample) F() float64                    { return s.f }
func (s sample) H() *histogram.Histogram       { return nil }
func (s sample) FH() *histogram.FloatHistogram { return nil }
func (s sample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s sample) Copy() chunks.Sample           { return s }

type store struct{ series []storage.Series }

func newStore(fixture []string, job string, up int, leaseNS, lease string, leaseAge int, now time.Time) *store {
	st := &store{}
	const step, span = 15, 3600
	add := func(lset labels.Labels, value func(i, n int) float64) {
		var ss []chunks.Sample
		n := span / step
		for i := 0; i <= n; i++ {
			t := now.Add(time.Duration(i*step-span) * time.Second)
			ss = append(ss, sample{t.UnixMilli(), value(i, n)})
		}
		st.series = append(st.series, storage.NewListSeries(lset, ss))
	}
	for i := 0; i < up; i++ {
		add(labels.FromStrings("__name__", "up", "job", job, "instance", fmt.Sprintf("10.0.0.%d:8080", i+1)),
			func(int, int) float64 { return 1 })
	}
	if leaseAge >= 0 {
		// kube-state-metrics' view of the Lease: the renew time, stuck leaseAge seconds ago.
		add(labels.FromStrings("__name__", "kube_lease_renew_time", "namespace", leaseNS, "lease", lease, "job", "kube-state-metrics"),
			func(i, n int) float64 {
				t := now.Add(time.Duration((i-n)*step) * time.Second).Unix()
				return float64(min(t, now.Unix()-int64(leaseAge)))
			})
	}
	for _, line := range fixture {
		cut := strings.LastIndexByte(line, ' ')
		lset, err := promParser.ParseMetric(line[:cut])
		if err != nil {
			fail("fixture %q: %v", line, err)
			continue
		}
		v, err := strconv.ParseFloat(line[cut+1:], 64)
		if err != nil {
			fail("fixture %q: %v", line, err)
			continue
		}
		name := lset.Get("__name__")
		allowed, known := metricLabels[name]
		if !known || !strings.HasPrefix(name, "lfu_") {
			fail("fixture %q: not an operator metric", line)
			continue
		}
		lset.Range(func(l labels.Label) {
			if l.Name != "__name__" && !contains(allowed, l.Name) {
				fail("fixture %q: %s has no label %q", line, name, l.Name)
			}
			if vals, ok := enums[l.Name]; ok && !contains(vals, l.Value) && l.Name != "kind" {
				fail("fixture %q: unknown %s %q", line, l.Name, l.Value)
			}
		})
		b := labels.NewBuilder(lset)
		b.Set("job", job)
		b.Set("instance", "10.0.0.1:8080")
		if !lset.Has("namespace") {
			b.Set("namespace", leaseNS) // the target's namespace, as honorLabels leaves it
		}
		counter := strings.HasSuffix(name, "_total") || strings.HasSuffix(name, "_bucket") ||
			strings.HasSuffix(name, "_count") || strings.HasSuffix(name, "_sum")
		if counter {
			// The fixture value is reached at `now`, growing linearly over the hour.
			add(b.Labels(), func(i, n int) float64 { return v * float64(i) / float64(n) })
		} else {
			add(b.Labels(), func(int, int) float64 { return v })
		}
	}
	return st
}

func (s *store) Querier(int64, int64) (storage.Querier, error) { return s, nil }
func (s *store) Close() error                                  { return nil }
func (s *store) LabelValues(context.Context, string, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, nil
}
func (s *store) LabelNames(context.Context, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, nil
}
func (s *store) Select(_ context.Context, _ bool, _ *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	var out []storage.Series
	for _, se := range s.series {
		ok := true
		for _, m := range ms {
			if !m.Matches(se.Labels().Get(m.Name)) {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, se)
		}
	}
	sort.Slice(out, func(i, j int) bool { return labels.Compare(out[i].Labels(), out[j].Labels()) < 0 })
	return &seriesSet{list: out, i: -1}
}

type seriesSet struct {
	list []storage.Series
	i    int
}

func (s *seriesSet) Next() bool                        { s.i++; return s.i < len(s.list) }
func (s *seriesSet) At() storage.Series                { return s.list[s.i] }
func (s *seriesSet) Err() error                        { return nil }
func (s *seriesSet) Warnings() annotations.Annotations { return nil }

var engine = promql.NewEngine(promql.EngineOpts{MaxSamples: 1_000_000, Timeout: 10 * time.Second, LookbackDelta: 5 * time.Minute})

// eval returns the number of series (or 1 for a scalar) the expression yields at `at`, or -1.
func eval(st *store, expr string, at time.Time) int {
	q, err := engine.NewInstantQuery(context.Background(), st, nil, expr, at)
	if err != nil {
		fail("%s: %v", expr, err)
		return -1
	}
	defer q.Close()
	res := q.Exec(context.Background())
	if res.Err != nil {
		fail("%s: %v", expr, res.Err)
		return -1
	}
	switch v := res.Value.(type) {
	case promql.Vector:
		return len(v)
	case promql.Matrix:
		return len(v)
	case promql.Scalar:
		return 1
	default:
		return 0
	}
}

func exit() {
	fmt.Fprintf(os.Stderr, "promql-check: %d failure(s)\n", len(failures))
	os.Exit(1)
}

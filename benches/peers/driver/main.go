// Command driver is the measuring side of benches/peers/run.sh (a benchmark, not a test).
//
//	driver switch       N blue-green switches of a 2-replica Argo Rollout; per run, from the
//	                    arrival times of client-go watch events on the ReplicaSets, the Service
//	                    and the EndpointSlices: (a) new ReplicaSet fully available -> Service
//	                    selector switched, (b) switched -> EndpointSlices list only new pods.
//	driver paused       creates K paused blue-green Rollouts (each with its Service) and waits
//	                    until the controller has observed every one.
//	driver audit-writes counts one user's requests in the apiserver audit log in a time window.
//	driver report       the markdown table (p50/p90/max of the switch runs and the rest figures).
//
// All times of one run come from the same process clock (watch arrival), so watch delivery
// delay cancels out to first order; `svc_watch_lag_ms` in the raw TSV checks it against the
// apiserver's own stageTimestamp of the controller's Service write (audit log).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

const hashLabel = "rollouts-pod-template-hash"

var rolloutGVR = schema.GroupVersionResource{Group: "argoproj.io", Version: "v1alpha1", Resource: "rollouts"}

func die(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "driver: "+format+"\n", a...)
	os.Exit(1)
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "driver: "+format+"\n", a...)
}

func main() {
	if len(os.Args) < 2 {
		die("usage: driver switch|paused|audit-writes|report|compare [flags]")
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "switch":
		cmdSwitch(args)
	case "paused":
		cmdPaused(args)
	case "audit-writes":
		cmdAuditWrites(args)
	case "report":
		cmdReport(args)
	case "compare":
		cmdCompare(args)
	default:
		die("unknown subcommand %q", os.Args[1])
	}
}

func clients(kubeconfig string) (kubernetes.Interface, dynamic.Interface) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		die("kubeconfig: %v", err)
	}
	// The driver must never be the bottleneck (client-go's default is 5 QPS).
	cfg.QPS, cfg.Burst = 500, 1000
	cfg.UserAgent = "lfu-bench-peers-driver"
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		die("client: %v", err)
	}
	dc, err := dynamic.NewForConfig(cfg)
	if err != nil {
		die("dynamic client: %v", err)
	}
	return kc, dc
}

// ---------------------------------------------------------------------------------------------
// objects

func rollout(ns, name, image string, replicas int64, paused bool, scaleDownDelay int64) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "argoproj.io/v1alpha1",
		"kind":       "Rollout",
		"metadata":   map[string]any{"name": name, "namespace": ns},
		"spec": map[string]any{
			"replicas":             replicas,
			"revisionHistoryLimit": int64(1),
			"paused":               paused,
			"selector":             map[string]any{"matchLabels": map[string]any{"app": name}},
			"template": map[string]any{
				"metadata": map[string]any{"labels": map[string]any{"app": name}},
				"spec": map[string]any{"containers": []any{map[string]any{
					"name": "web", "image": image,
					"ports": []any{map[string]any{"containerPort": int64(8080)}},
				}}},
			},
			"strategy": map[string]any{"blueGreen": map[string]any{
				"activeService":         name,
				"autoPromotionEnabled":  true,
				"scaleDownDelaySeconds": scaleDownDelay,
			}},
		},
	}}
}

func service(ns, name string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
}

func image(tag string) string { return "registry.invalid/bench/web:" + tag }

// ---------------------------------------------------------------------------------------------
// switch

type event struct {
	kind string // rs | svc | eps
	typ  watch.EventType
	at   time.Time
	obj  runtime.Object
}

type runResult struct {
	run                  int
	ok                   bool
	note                 string
	t0                   time.Time // patch sent
	rsCreated, rsAvail   time.Time
	svcSwitched, epsOnly time.Time
	auditSvc             time.Time // stageTimestamp of the controller's Service write
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d.Microseconds())/1000) }

func cmdSwitch(args []string) {
	fs := flag.NewFlagSet("switch", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "driver kubeconfig")
	ns := fs.String("namespace", "argo-bench", "namespace of the runs (one Rollout per run, removed after it)")
	nsPerRun := fs.Bool("namespace-per-run", false, "create namespace <namespace>-<i> per run (cluster-wide controller)")
	runs := fs.Int("runs", 20, "number of switches")
	replicas := fs.Int64("replicas", 2, "replicas of the Rollout")
	scaleDown := fs.Int64("scale-down-delay", 3, "blueGreen.scaleDownDelaySeconds")
	timeout := fs.Duration("timeout", 180*time.Second, "per-phase timeout")
	out := fs.String("out", "", "raw TSV output (one line per run)")
	auditLog := fs.String("audit", "", "apiserver audit log (optional): adds the Service write's stageTimestamp")
	auditUser := fs.String("audit-user", "lfu-operator", "controller identity in the audit log")
	_ = fs.Parse(args)

	kc, dc := clients(*kubeconfig)
	ctx := context.Background()
	var results []runResult
	for i := 1; i <= *runs; i++ {
		runNS := *ns
		if *nsPerRun {
			runNS = fmt.Sprintf("%s-%d", *ns, i)
			if _, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: runNS}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				die("create namespace %s: %v", runNS, err)
			}
		}
		name := fmt.Sprintf("web-%d", i)
		r := oneSwitch(ctx, kc, dc, runNS, name, i, *replicas, *scaleDown, *timeout)
		if r.ok {
			logf("run %d/%d: new RS available->switched %s ms, switched->endpoints only new %s ms",
				i, *runs, ms(r.svcSwitched.Sub(r.rsAvail)), ms(r.epsOnly.Sub(r.svcSwitched)))
		} else {
			logf("run %d/%d: FAILED: %s", i, *runs, r.note)
		}
		results = append(results, r)
		cleanup(ctx, kc, dc, runNS, name, *nsPerRun)
	}
	if *auditLog != "" {
		addAuditTimes(results, *auditLog, *auditUser, *ns, *nsPerRun)
	}
	w := os.Stdout
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			die("%v", err)
		}
		defer f.Close()
		w = f
	}
	fmt.Fprintln(w, "run\tok\tpatch_to_rs_created_ms\tpatch_to_rs_available_ms\ta_available_to_switched_ms\tb_switched_to_endpoints_ms\tsvc_watch_lag_ms\tnote")
	for _, r := range results {
		if !r.ok {
			fmt.Fprintf(w, "%d\t0\t\t\t\t\t\t%s\n", r.run, r.note)
			continue
		}
		lag := ""
		if !r.auditSvc.IsZero() {
			lag = ms(r.svcSwitched.Round(0).Sub(r.auditSvc))
		}
		fmt.Fprintf(w, "%d\t1\t%s\t%s\t%s\t%s\t%s\t%s\n", r.run, ms(r.rsCreated.Sub(r.t0)), ms(r.rsAvail.Sub(r.t0)),
			ms(r.svcSwitched.Sub(r.rsAvail)), ms(r.epsOnly.Sub(r.svcSwitched)), lag, r.note)
	}
}

// waitHealthy polls (setup only, not measured) until the Rollout is Healthy on one hash, the
// Service selects that hash and the EndpointSlices list exactly its ready pods.
func waitHealthy(ctx context.Context, kc kubernetes.Interface, dc dynamic.Interface, ns, name string, replicas int64, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	last := ""
	for time.Now().Before(deadline) {
		ro, err := dc.Resource(rolloutGVR).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			phase, _, _ := unstructured.NestedString(ro.Object, "status", "phase")
			hash, _, _ := unstructured.NestedString(ro.Object, "status", "currentPodHash")
			stable, _, _ := unstructured.NestedString(ro.Object, "status", "stableRS")
			og, _, _ := unstructured.NestedFieldNoCopy(ro.Object, "status", "observedGeneration")
			last = fmt.Sprintf("phase=%s hash=%s stable=%s observedGeneration=%v generation=%d", phase, hash, stable, og, ro.GetGeneration())
			if phase == "Healthy" && hash != "" && hash == stable && fmt.Sprint(og) == strconv.FormatInt(ro.GetGeneration(), 10) {
				svc, err := kc.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
				if err == nil && svc.Spec.Selector[hashLabel] == hash {
					sl, err := kc.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + name})
					if err == nil {
						m := map[string]*discoveryv1.EndpointSlice{}
						for k := range sl.Items {
							m[sl.Items[k].Name] = &sl.Items[k]
						}
						if onlyHash(m, name, hash, replicas) {
							return hash, nil
						}
						last += " (endpoints not yet only this hash)"
					}
				} else {
					last += " (service selector not yet on this hash)"
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return "", fmt.Errorf("rollout %s/%s not healthy after %s: %s", ns, name, timeout, last)
}

// onlyHash: every endpoint of the Service's slices is a pod of the ReplicaSet with this hash
// (pod names are <rollout>-<hash>-<suffix>), and `replicas` of them are ready.
func onlyHash(slices map[string]*discoveryv1.EndpointSlice, name, hash string, replicas int64) bool {
	prefix := name + "-" + hash + "-"
	var ready int64
	for _, s := range slices {
		for _, e := range s.Endpoints {
			if e.TargetRef == nil || !strings.HasPrefix(e.TargetRef.Name, prefix) {
				return false
			}
			if e.Conditions.Ready == nil || *e.Conditions.Ready {
				ready++
			}
		}
	}
	return ready == replicas
}

func startWatch(ctx context.Context, kind string, ch chan<- event, list func() (runtime.Object, string, error), w func(rv string) (watch.Interface, error)) ([]runtime.Object, error) {
	obj, rv, err := list()
	if err != nil {
		return nil, err
	}
	wi, err := w(rv)
	if err != nil {
		return nil, err
	}
	go func() {
		defer wi.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-wi.ResultChan():
				if !ok {
					return
				}
				at := time.Now()
				if e.Type == watch.Error || e.Type == watch.Bookmark {
					continue
				}
				select {
				case ch <- event{kind: kind, typ: e.Type, at: at, obj: e.Object}:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	items, _ := metaItems(obj)
	return items, nil
}

func metaItems(obj runtime.Object) ([]runtime.Object, error) {
	switch l := obj.(type) {
	case *appsv1.ReplicaSetList:
		out := make([]runtime.Object, len(l.Items))
		for i := range l.Items {
			out[i] = &l.Items[i]
		}
		return out, nil
	case *corev1.ServiceList:
		out := make([]runtime.Object, len(l.Items))
		for i := range l.Items {
			out[i] = &l.Items[i]
		}
		return out, nil
	case *discoveryv1.EndpointSliceList:
		out := make([]runtime.Object, len(l.Items))
		for i := range l.Items {
			out[i] = &l.Items[i]
		}
		return out, nil
	}
	return nil, fmt.Errorf("unexpected list %T", obj)
}

func oneSwitch(ctx context.Context, kc kubernetes.Interface, dc dynamic.Interface, ns, name string, run int, replicas, scaleDown int64, timeout time.Duration) runResult {
	res := runResult{run: run}
	fail := func(format string, a ...any) runResult {
		res.note = fmt.Sprintf(format, a...)
		return res
	}
	if _, err := kc.CoreV1().Services(ns).Create(ctx, service(ns, name), metav1.CreateOptions{}); err != nil {
		return fail("create service: %v", err)
	}
	oldImage, newImage := image(fmt.Sprintf("run%d-blue", run)), image(fmt.Sprintf("run%d-green", run))
	if _, err := dc.Resource(rolloutGVR).Namespace(ns).Create(ctx, rollout(ns, name, oldImage, replicas, false, scaleDown), metav1.CreateOptions{}); err != nil {
		return fail("create rollout: %v", err)
	}
	oldHash, err := waitHealthy(ctx, kc, dc, ns, name, replicas, timeout)
	if err != nil {
		return fail("%v", err)
	}

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := make(chan event, 4096)
	sel := metav1.ListOptions{LabelSelector: "app=" + name}
	if _, err := startWatch(wctx, "rs", ch,
		func() (runtime.Object, string, error) {
			l, err := kc.AppsV1().ReplicaSets(ns).List(ctx, sel)
			if err != nil {
				return nil, "", err
			}
			return l, l.ResourceVersion, nil
		},
		func(rv string) (watch.Interface, error) {
			o := sel
			o.ResourceVersion = rv
			return kc.AppsV1().ReplicaSets(ns).Watch(wctx, o)
		}); err != nil {
		return fail("watch replicasets: %v", err)
	}
	svcSel := metav1.ListOptions{FieldSelector: "metadata.name=" + name}
	if _, err := startWatch(wctx, "svc", ch,
		func() (runtime.Object, string, error) {
			l, err := kc.CoreV1().Services(ns).List(ctx, svcSel)
			if err != nil {
				return nil, "", err
			}
			return l, l.ResourceVersion, nil
		},
		func(rv string) (watch.Interface, error) {
			o := svcSel
			o.ResourceVersion = rv
			return kc.CoreV1().Services(ns).Watch(wctx, o)
		}); err != nil {
		return fail("watch services: %v", err)
	}
	epsSel := metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + name}
	epsInit, err := startWatch(wctx, "eps", ch,
		func() (runtime.Object, string, error) {
			l, err := kc.DiscoveryV1().EndpointSlices(ns).List(ctx, epsSel)
			if err != nil {
				return nil, "", err
			}
			return l, l.ResourceVersion, nil
		},
		func(rv string) (watch.Interface, error) {
			o := epsSel
			o.ResourceVersion = rv
			return kc.DiscoveryV1().EndpointSlices(ns).Watch(wctx, o)
		})
	if err != nil {
		return fail("watch endpointslices: %v", err)
	}

	patch := fmt.Sprintf(`[{"op":"test","path":"/spec/template/spec/containers/0/image","value":%q},`+
		`{"op":"replace","path":"/spec/template/spec/containers/0/image","value":%q}]`, oldImage, newImage)
	res.t0 = time.Now()
	if _, err := dc.Resource(rolloutGVR).Namespace(ns).Patch(ctx, name, types.JSONPatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		return fail("patch rollout: %v", err)
	}

	// Collect every event until the end state is reached; the times are derived afterwards by
	// replaying the log, so the order in which the three independent streams deliver does not
	// matter.
	var log []event
	newHash := ""
	slices := map[string]*discoveryv1.EndpointSlice{}
	for _, o := range epsInit {
		s := o.(*discoveryv1.EndpointSlice)
		slices[s.Name] = s
	}
	svcHash := oldHash
	deadline := time.After(timeout)
	for {
		if newHash != "" && svcHash == newHash && onlyHash(slices, name, newHash, replicas) {
			break
		}
		select {
		case e := <-ch:
			log = append(log, e)
			switch o := e.obj.(type) {
			case *appsv1.ReplicaSet:
				if len(o.Spec.Template.Spec.Containers) > 0 && o.Spec.Template.Spec.Containers[0].Image == newImage {
					newHash = o.Labels[hashLabel]
				}
			case *corev1.Service:
				svcHash = o.Spec.Selector[hashLabel]
			case *discoveryv1.EndpointSlice:
				if e.typ == watch.Deleted {
					delete(slices, o.Name)
				} else {
					slices[o.Name] = o
				}
			}
		case <-deadline:
			return fail("timeout after %s: newHash=%q service hash=%q", timeout, newHash, svcHash)
		}
	}
	cancel()

	// Replay.
	slices = map[string]*discoveryv1.EndpointSlice{}
	for _, o := range epsInit {
		s := o.(*discoveryv1.EndpointSlice)
		slices[s.Name] = s
	}
	for _, e := range log {
		switch o := e.obj.(type) {
		case *appsv1.ReplicaSet:
			if o.Labels[hashLabel] != newHash {
				continue
			}
			if res.rsCreated.IsZero() {
				res.rsCreated = e.at
			}
			if res.rsAvail.IsZero() && o.Spec.Replicas != nil && int64(*o.Spec.Replicas) == replicas && int64(o.Status.AvailableReplicas) >= replicas {
				res.rsAvail = e.at
			}
		case *corev1.Service:
			if res.svcSwitched.IsZero() && o.Spec.Selector[hashLabel] == newHash {
				res.svcSwitched = e.at
			}
		case *discoveryv1.EndpointSlice:
			if e.typ == watch.Deleted {
				delete(slices, o.Name)
			} else {
				slices[o.Name] = o
			}
			if res.epsOnly.IsZero() && onlyHash(slices, name, newHash, replicas) {
				res.epsOnly = e.at
			}
		}
	}
	if res.rsAvail.IsZero() || res.svcSwitched.IsZero() || res.epsOnly.IsZero() {
		return fail("incomplete event log (rsAvail=%v svc=%v eps=%v)", !res.rsAvail.IsZero(), !res.svcSwitched.IsZero(), !res.epsOnly.IsZero())
	}
	if res.svcSwitched.Before(res.rsAvail) {
		res.note = "Service event arrived before the RS-available event (watch streams deliver independently)"
	}
	res.ok = true
	return res
}

// cleanup removes the run's Rollout and Service and waits (bounded) for its pods to be gone,
// so the next run starts on a quiet cluster.
func cleanup(ctx context.Context, kc kubernetes.Interface, dc dynamic.Interface, ns, name string, nsPerRun bool) {
	bg := metav1.DeletePropagationBackground
	_ = dc.Resource(rolloutGVR).Namespace(ns).Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &bg})
	_ = kc.CoreV1().Services(ns).Delete(ctx, name, metav1.DeleteOptions{})
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		pods, err := kc.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
		if err == nil && len(pods.Items) == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if nsPerRun {
		_ = kc.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
	}
}

// ---------------------------------------------------------------------------------------------
// audit log

type auditEvent struct {
	Stage     string `json:"stage"`
	Verb      string `json:"verb"`
	UserAgent string `json:"userAgent"`
	User      struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef *struct {
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
		Namespace   string `json:"namespace"`
		Name        string `json:"name"`
		APIGroup    string `json:"apiGroup"`
	} `json:"objectRef"`
	RequestReceived time.Time `json:"requestReceivedTimestamp"`
	StageTimestamp  time.Time `json:"stageTimestamp"`
	ResponseStatus  *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
}

func readAudit(path string, fn func(*auditEvent)) {
	f, err := os.Open(path)
	if err != nil {
		die("audit log: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e auditEvent
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue
		}
		fn(&e)
	}
}

var writeVerbs = map[string]bool{"create": true, "update": true, "patch": true, "delete": true, "deletecollection": true}

func addAuditTimes(results []runResult, path, user, ns string, nsPerRun bool) {
	type key struct{ ns, name string }
	writes := map[key][]time.Time{}
	readAudit(path, func(e *auditEvent) {
		if e.Stage != "ResponseComplete" || e.User.Username != user || !writeVerbs[e.Verb] || e.ObjectRef == nil ||
			e.ObjectRef.Resource != "services" || e.ObjectRef.Subresource != "" {
			return
		}
		k := key{e.ObjectRef.Namespace, e.ObjectRef.Name}
		writes[k] = append(writes[k], e.StageTimestamp)
	})
	for i := range results {
		r := &results[i]
		if !r.ok {
			continue
		}
		runNS := ns
		if nsPerRun {
			runNS = fmt.Sprintf("%s-%d", ns, r.run)
		}
		// The controller's Service write nearest to the observed switch, within [patch, +1 s]
		// (ResponseComplete can be stamped after the watch event was already delivered).
		var best time.Time
		sw := r.svcSwitched.Round(0)
		for _, t := range writes[key{runNS, fmt.Sprintf("web-%d", r.run)}] {
			if t.After(r.t0.Round(0)) && t.Before(sw.Add(time.Second)) &&
				(best.IsZero() || absDur(t.Sub(sw)) < absDur(best.Sub(sw))) {
				best = t
			}
		}
		r.auditSvc = best
	}
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

func cmdAuditWrites(args []string) {
	fs := flag.NewFlagSet("audit-writes", flag.ExitOnError)
	path := fs.String("audit", os.Getenv("LFU_AUDIT_LOG"), "audit log")
	user := fs.String("user", "lfu-operator", "username")
	from := fs.String("from", "", "window start, RFC3339Nano")
	to := fs.String("to", "", "window end, RFC3339Nano")
	_ = fs.Parse(args)
	t1, err := time.Parse(time.RFC3339Nano, *from)
	if err != nil {
		die("-from: %v", err)
	}
	t2, err := time.Parse(time.RFC3339Nano, *to)
	if err != nil {
		die("-to: %v", err)
	}
	total, writes, leaseWrites := 0, 0, 0
	detail := map[string]int{}
	readAudit(*path, func(e *auditEvent) {
		if e.Stage != "ResponseComplete" || e.User.Username != *user {
			return
		}
		if e.RequestReceived.Before(t1) || !e.RequestReceived.Before(t2) {
			return
		}
		total++
		res := ""
		if e.ObjectRef != nil {
			res = e.ObjectRef.Resource
			if e.ObjectRef.Subresource != "" {
				res += "/" + e.ObjectRef.Subresource
			}
		}
		code := 0
		if e.ResponseStatus != nil {
			code = e.ResponseStatus.Code
		}
		detail[fmt.Sprintf("%s %s %d", e.Verb, res, code)]++
		if writeVerbs[e.Verb] {
			writes++
			if res == "leases" {
				leaseWrites++
			}
		}
	})
	fmt.Printf("requests %d\nwrites %d\nlease_writes %d\n", total, writes, leaseWrites)
	keys := make([]string, 0, len(detail))
	for k := range detail {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Printf("detail %s %d\n", k, detail[k])
	}
}

// ---------------------------------------------------------------------------------------------
// paused

func cmdPaused(args []string) {
	fs := flag.NewFlagSet("paused", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "driver kubeconfig")
	ns := fs.String("namespace", "argo-bench", "namespace")
	count := fs.Int("count", 200, "number of paused Rollouts")
	replicas := fs.Int64("replicas", 1, "replicas of each")
	timeout := fs.Duration("timeout", 300*time.Second, "wait for the controller to observe all")
	_ = fs.Parse(args)
	kc, dc := clients(*kubeconfig)
	ctx := context.Background()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, *count)
	sem := make(chan struct{}, 8)
	for k := 0; k < *count; k++ {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			name := fmt.Sprintf("paused-%d", k)
			if _, err := kc.CoreV1().Services(*ns).Create(ctx, service(*ns, name), metav1.CreateOptions{}); err != nil {
				errs <- err
				return
			}
			if _, err := dc.Resource(rolloutGVR).Namespace(*ns).Create(ctx, rollout(*ns, name, image("paused"), *replicas, true, 30), metav1.CreateOptions{}); err != nil {
				errs <- err
			}
		}(k)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		die("create paused rollout: %v", err)
	}
	logf("created %d paused Rollouts (+Services) in %.1fs", *count, time.Since(start).Seconds())
	deadline := time.Now().Add(*timeout)
	for {
		l, err := dc.Resource(rolloutGVR).Namespace(*ns).List(ctx, metav1.ListOptions{})
		observed := 0
		if err == nil {
			for _, ro := range l.Items {
				if !strings.HasPrefix(ro.GetName(), "paused-") {
					continue
				}
				og, _, _ := unstructured.NestedFieldNoCopy(ro.Object, "status", "observedGeneration")
				if og != nil && fmt.Sprint(og) == strconv.FormatInt(ro.GetGeneration(), 10) {
					observed++
				}
			}
		}
		if observed >= *count {
			logf("controller observed all %d paused Rollouts %.1fs after the first create", *count, time.Since(start).Seconds())
			return
		}
		if time.Now().After(deadline) {
			die("only %d/%d paused Rollouts observed after %s", observed, *count, *timeout)
		}
		time.Sleep(time.Second)
	}
}

// ---------------------------------------------------------------------------------------------
// report

// pct: nearest-rank percentile of sorted values.
func pct(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	k := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	if k < 0 {
		k = 0
	}
	return sorted[k]
}

func cmdReport(args []string) {
	fs := flag.NewFlagSet("report", flag.ExitOnError)
	raw := fs.String("raw", "", "raw TSV from `driver switch`")
	title := fs.String("title", "Argo Rollouts", "peer name")
	rssIdle := fs.Float64("rss-idle-mib", math.NaN(), "")
	rss200 := fs.Float64("rss-paused-mib", math.NaN(), "")
	paused := fs.Int("paused", 200, "")
	cpu := fs.Float64("cpu-s", math.NaN(), "CPU seconds over the rest window")
	rest := fs.Float64("rest-s", math.NaN(), "rest window seconds")
	writes := fs.Float64("writes", math.NaN(), "write requests in the rest window")
	leaseWrites := fs.Float64("lease-writes", math.NaN(), "of which Lease writes")
	requests := fs.Float64("requests", math.NaN(), "all requests in the rest window")
	notes := fs.String("notes", "", "free text appended under the table")
	_ = fs.Parse(args)

	r := readRuns(*raw)
	a, b, lag, avail, runs, failed := r.a, r.b, r.lag, r.avail, r.runs, r.failed
	row := func(label string, s []float64) string {
		return fmt.Sprintf("| %s | %d | %.1f | %.1f | %.1f |", label, len(s), pct(s, 50), pct(s, 90), pct(s, 100))
	}
	perMin := func(n float64) float64 { return n / *rest * 60 }
	fmt.Printf("## %s blue-green switch on the local control plane\n\n", *title)
	fmt.Printf("%d runs (%d failed); times in ms from client-go watch arrival times (nearest-rank percentiles).\n\n", runs, failed)
	fmt.Println("| measure | n | p50 ms | p90 ms | max ms |")
	fmt.Println("|---|---|---|---|---|")
	fmt.Println(row("(a) new ReplicaSet all replicas available → active Service selector switched", a))
	fmt.Println(row("(b) selector switched → EndpointSlices list only the new pods", b))
	fmt.Println(row("context: template patch → new ReplicaSet available (scheduler + kwok)", avail))
	fmt.Println(row("check: Service watch arrival − audit stageTimestamp of the controller's write", lag))
	fmt.Println()
	fmt.Println("| controller cost | value |")
	fmt.Println("|---|---|")
	fmt.Printf("| RSS idle (30 s after start, no Rollouts) | %.1f MiB |\n", *rssIdle)
	fmt.Printf("| RSS with %d paused Rollouts | %.1f MiB |\n", *paused, *rss200)
	fmt.Printf("| CPU at rest (%d paused Rollouts) over %.0f s | %.2f s (%.2f%% of one core) |\n", *paused, *rest, *cpu, *cpu / *rest * 100)
	fmt.Printf("| API writes/min at rest (audit log, controller identity) | %.1f (Lease renewals %.1f, other %.1f) |\n",
		perMin(*writes), perMin(*leaseWrites), perMin(*writes-*leaseWrites))
	fmt.Printf("| API requests/min at rest, all verbs | %.1f |\n", perMin(*requests))
	if *notes != "" {
		fmt.Printf("\n%s\n", *notes)
	}
}

// runs of one controller, each measure sorted.
type runSet struct {
	a, b, lag, avail []float64
	runs, failed     int
}

// readRuns reads a raw TSV written by `switch` (or the same columns for our operator).
func readRuns(path string) runSet {
	f, err := os.Open(path)
	if err != nil {
		die("%v", err)
	}
	defer f.Close()
	var r runSet
	sc := bufio.NewScanner(f)
	first := true
	for sc.Scan() {
		if first {
			first = false
			continue
		}
		c := strings.Split(sc.Text(), "\t")
		if len(c) < 7 {
			continue
		}
		r.runs++
		if c[1] != "1" {
			r.failed++
			continue
		}
		parse := func(s string, into *[]float64) {
			if v, err := strconv.ParseFloat(s, 64); err == nil {
				*into = append(*into, v)
			}
		}
		parse(c[3], &r.avail)
		parse(c[4], &r.a)
		parse(c[5], &r.b)
		parse(c[6], &r.lag)
	}
	for _, s := range [][]float64{r.a, r.b, r.lag, r.avail} {
		sort.Float64s(s)
	}
	return r
}

// readCosts reads "key value" lines (rss_idle, rss_paused, cpu_s, rest_s, writes, requests).
func readCosts(path string) map[string]float64 {
	b, err := os.ReadFile(path)
	if err != nil {
		die("%v", err)
	}
	m := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 {
			if v, err := strconv.ParseFloat(f[1], 64); err == nil {
				m[f[0]] = v
			}
		}
	}
	return m
}

// cmdCompare prints one table: both controllers' p50 / p90 / max and ours / theirs.
func cmdCompare(args []string) {
	fs := flag.NewFlagSet("compare", flag.ExitOnError)
	theirsRaw := fs.String("theirs-raw", "", "raw TSV of the peer")
	oursRaw := fs.String("ours-raw", "", "raw TSV of ours")
	theirsCost := fs.String("theirs-cost", "", "cost lines of the peer")
	oursCost := fs.String("ours-cost", "", "cost lines of ours")
	theirsName := fs.String("theirs", "Argo Rollouts", "")
	paused := fs.Int("paused", 200, "")
	_ = fs.Parse(args)
	t, o := readRuns(*theirsRaw), readRuns(*oursRaw)
	tc, oc := readCosts(*theirsCost), readCosts(*oursCost)
	three := func(s []float64) string {
		return fmt.Sprintf("%.1f / %.1f / %.1f", pct(s, 50), pct(s, 90), pct(s, 100))
	}
	ratio := func(ours, theirs float64) string {
		if theirs == 0 || math.IsNaN(ours) || math.IsNaN(theirs) {
			return "-"
		}
		return fmt.Sprintf("%.2f", ours/theirs)
	}
	fmt.Printf("| | %s p50 / p90 / max | ours p50 / p90 / max | ours ÷ theirs (p50) |\n", *theirsName)
	fmt.Println("|---|---|---|---|")
	fmt.Printf("| new pods Available → Service selector switched (ms, %d / %d runs) | %s | %s | %s |\n",
		len(t.a), len(o.a), three(t.a), three(o.a), ratio(pct(o.a, 50), pct(t.a, 50)))
	fmt.Printf("| switched → EndpointSlices only new pods (ms; the control plane's share) | %s | %s | %s |\n",
		three(t.b), three(o.b), ratio(pct(o.b, 50), pct(t.b, 50)))
	perMin := func(c map[string]float64, k string) float64 { return c[k] / c["rest_s"] * 60 }
	fmt.Printf("| RSS idle (MiB) | %.1f | %.1f | %s |\n", tc["rss_idle"], oc["rss_idle"], ratio(oc["rss_idle"], tc["rss_idle"]))
	fmt.Printf("| RSS with %d paused objects (MiB) | %.1f | %.1f | %s |\n", *paused, tc["rss_paused"], oc["rss_paused"], ratio(oc["rss_paused"], tc["rss_paused"]))
	fmt.Printf("| CPU at rest (s over %.0f s) | %.2f | %.2f | %s |\n", tc["rest_s"], tc["cpu_s"], oc["cpu_s"], ratio(oc["cpu_s"], tc["cpu_s"]))
	fmt.Printf("| API writes / min at rest | %.1f | %.1f | %s |\n", perMin(tc, "writes"), perMin(oc, "writes"), ratio(perMin(oc, "writes"), perMin(tc, "writes")))
	fmt.Printf("| API requests / min at rest | %.1f | %.1f | %s |\n", perMin(tc, "requests"), perMin(oc, "requests"), ratio(perMin(oc, "requests"), perMin(tc, "requests")))
	if t.failed+o.failed > 0 {
		fmt.Printf("\nFailed runs: %s %d, ours %d.\n", *theirsName, t.failed, o.failed)
	}
}

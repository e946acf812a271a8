package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Orthanc, a real DICOMweb endpoint, and where the tests find it. CI
// installs both Debian packages (scripts/install-test-deps.sh).
const (
	OrthancPath            = "/usr/sbin/Orthanc"
	OrthancDICOMwebPlugin  = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
	OrthancPackage         = "orthanc"
	OrthancDICOMwebPackage = "orthanc-dicomweb"
)

// ErrNoOrthanc is returned (wrapped) by StartOrthanc when Orthanc or its
// DICOMweb plugin is not installed.
var ErrNoOrthanc = errors.New("orthanc is not installed")

// CheckOrthanc says, naming the Debian packages, what is missing to run
// Orthanc with its DICOMweb plugin; nil when both are installed.
func CheckOrthanc() error {
	var missing []string
	if _, err := os.Stat(OrthancPath); err != nil {
		missing = append(missing, fmt.Sprintf("%s (Debian package %q)", OrthancPath, OrthancPackage))
	}
	if _, err := os.Stat(OrthancDICOMwebPlugin); err != nil {
		missing = append(missing, fmt.Sprintf("%s (Debian package %q)", OrthancDICOMwebPlugin, OrthancDICOMwebPackage))
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("%w: missing %s; install with apt-get install %s %s (`make test-deps` does it)",
		ErrNoOrthanc, strings.Join(missing, " and "), OrthancPackage, OrthancDICOMwebPackage)
}

// Orthanc is a running Orthanc server with its DICOMweb plugin, on
// loopback ports of its own, its storage and index in a directory of its
// own.
type Orthanc struct {
	*Process
	Dir        string // storage, index, configuration and Lua scripts
	ConfigPath string
	HTTPPort   int
	DICOMPort  int
	AETitle    string // its DICOM AE title ("ORTHANC")

	client *http.Client
}

// StartOrthanc starts Orthanc with a configuration written into dir
// (created if missing): HTTP and DICOM on free loopback ports, storage and
// index under dir, no authentication, no remote access, the DICOMweb
// plugin at /dicom-web/. extra is merged over that configuration: a key
// whose value is an object in both is merged one level down (so
// {"DicomWeb": {"Servers": ...}} keeps Enable and Root). It returns once
// the REST API and the DICOMweb plugin answer; the caller stops it (Stop,
// Kill). Setting "HttpPort" and "DicomPort" in extra pins the ports (to
// restart on the same ones, see Restart); otherwise, if a port is taken
// between choosing and binding it, StartOrthanc tries other ports.
func StartOrthanc(dir string, extra map[string]any) (*Orthanc, error) {
	if err := CheckOrthanc(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "storage"), 0o755); err != nil {
		return nil, err
	}
	_, pinned := extra["HttpPort"]
	for attempt := 1; ; attempt++ {
		cfg, err := orthancConfig(dir, extra)
		if err != nil {
			return nil, err
		}
		o, err := launchOrthanc(dir, cfg)
		if err == nil || pinned || !errors.Is(err, errExited) || attempt == 4 {
			return o, err
		}
	}
}

// orthancConfig is the configuration StartOrthanc writes.
func orthancConfig(dir string, extra map[string]any) (map[string]any, error) {
	cfg := map[string]any{
		"Name":                  "dicomgw-test",
		"DicomAet":              "ORTHANC",
		"StorageDirectory":      filepath.Join(dir, "storage"),
		"IndexDirectory":        filepath.Join(dir, "storage"),
		"RemoteAccessAllowed":   false,
		"AuthenticationEnabled": false,
		"SaveJobs":              false,
		"Plugins":               []string{OrthancDICOMwebPlugin},
		"DicomWeb":              map[string]any{"Enable": true, "Root": "/dicom-web/"},
	}
	for k, v := range extra {
		old, ok1 := cfg[k].(map[string]any)
		add, ok2 := v.(map[string]any)
		if ok1 && ok2 {
			merged := maps.Clone(old)
			maps.Copy(merged, add)
			cfg[k] = merged
		} else {
			cfg[k] = v
		}
	}
	for _, k := range []string{"HttpPort", "DicomPort"} {
		if _, ok := cfg[k]; !ok {
			p, err := FreePort()
			if err != nil {
				return nil, err
			}
			cfg[k] = p
		}
	}
	return cfg, nil
}

func launchOrthanc(dir string, cfg map[string]any) (*Orthanc, error) {
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "orthanc.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return nil, err
	}
	o := &Orthanc{Dir: dir, ConfigPath: path, client: &http.Client{Timeout: 60 * time.Second}}
	o.HTTPPort, _ = toInt(cfg["HttpPort"])
	o.DICOMPort, _ = toInt(cfg["DicomPort"])
	o.AETitle, _ = cfg["DicomAet"].(string)
	if err := o.start(); err != nil {
		return nil, err
	}
	return o, nil
}

func toInt(v any) (int, bool) {
	switch n := v.(type) {
	case int:
		return n, true
	case float64:
		return int(n), true
	case json.Number:
		i, err := n.Int64()
		return int(i), err == nil
	}
	return 0, false
}

// start runs Orthanc on the configuration file and waits until it serves.
func (o *Orthanc) start() error {
	p, err := StartProcess(exec.Command(OrthancPath, o.ConfigPath), nil)
	if err != nil {
		return fmt.Errorf("starting Orthanc: %w", err)
	}
	o.Process = p
	if err := o.waitReady(60 * time.Second); err != nil {
		p.Kill()
		return fmt.Errorf("Orthanc (%s): %w\n%s", o.ConfigPath, err, Tail(p.Output(), 6000))
	}
	return nil
}

// waitReady polls the REST API and the DICOMweb plugin until both answer.
func (o *Orthanc) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	c := &http.Client{Timeout: 2 * time.Second}
	for {
		ok := true
		for _, u := range []string{o.URL() + "/system", o.BaseURL() + "/studies?limit=1"} {
			resp, err := c.Get(u)
			if err != nil {
				ok = false
				break
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				ok = false
				break
			}
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("REST API not answering on %s after %v", o.URL(), timeout)
		}
		select {
		case <-o.Exited():
			return fmt.Errorf("%w (%v)", errExited, o.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Restart starts Orthanc again, after Stop or Kill, on the same ports,
// storage and configuration.
func (o *Orthanc) Restart() error {
	select {
	case <-o.Exited():
	default:
		return errors.New("Orthanc is still running")
	}
	// The ports were ours a moment ago; a client in TIME_WAIT does not
	// stop Orthanc binding them, so one try is enough unless someone took
	// them meanwhile.
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		if err = o.start(); err == nil || !errors.Is(err, errExited) {
			return err
		}
		time.Sleep(250 * time.Millisecond)
	}
	return err
}

// URL is the root of Orthanc's REST API.
func (o *Orthanc) URL() string { return "http://127.0.0.1:" + strconv.Itoa(o.HTTPPort) }

// BaseURL is the DICOMweb service root (no trailing slash), for
// dicomgw serve --stow-url.
func (o *Orthanc) BaseURL() string { return o.URL() + "/dicom-web" }

// DICOMAddr is the loopback address of its DICOM port.
func (o *Orthanc) DICOMAddr() string { return "127.0.0.1:" + strconv.Itoa(o.DICOMPort) }

// Get fetches path (below URL) and returns the body of a 200 answer.
func (o *Orthanc) Get(path string) ([]byte, error) {
	return o.do(http.MethodGet, path, "", nil)
}

// GetJSON fetches path and decodes the JSON answer into v.
func (o *Orthanc) GetJSON(path string, v any) error {
	b, err := o.Get(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// Post posts body to path and returns the body of a 200 answer.
func (o *Orthanc) Post(path, contentType string, body []byte) ([]byte, error) {
	return o.do(http.MethodPost, path, contentType, body)
}

func (o *Orthanc) do(method, path, contentType string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(context.Background(), method, o.URL()+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := o.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return b, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, Tail(string(b), 500))
	}
	return b, nil
}

// OrthancStatistics is part of Orthanc's /statistics.
type OrthancStatistics struct {
	CountInstances int
	CountSeries    int
	CountStudies   int
	CountPatients  int
}

// Statistics reads /statistics.
func (o *Orthanc) Statistics() (OrthancStatistics, error) {
	var s OrthancStatistics
	err := o.GetJSON("/statistics", &s)
	return s, err
}

// CountInstances is how many instances Orthanc holds.
func (o *Orthanc) CountInstances() (int, error) {
	s, err := o.Statistics()
	return s.CountInstances, err
}

// WaitInstances polls until Orthanc holds at least n instances, and
// returns how many it holds then.
func (o *Orthanc) WaitInstances(n int, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	for {
		got, err := o.CountInstances()
		if err == nil && got >= n {
			return got, nil
		}
		if time.Now().After(deadline) {
			return got, fmt.Errorf("Orthanc holds %d instances after %v, want %d (last error: %v)", got, timeout, n, err)
		}
		select {
		case <-o.Exited():
			return got, fmt.Errorf("Orthanc exited (%v) holding %d instances, want %d", o.Err(), got, n)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// SOPInstanceUIDs lists the SOP Instance UIDs Orthanc holds, each with
// Orthanc's instance ID.
func (o *Orthanc) SOPInstanceUIDs() (map[string]string, error) {
	var list []struct {
		ID            string
		MainDicomTags map[string]string
	}
	if err := o.GetJSON("/instances?expand", &list); err != nil {
		return nil, err
	}
	out := make(map[string]string, len(list))
	for _, it := range list {
		out[it.MainDicomTags["SOPInstanceUID"]] = it.ID
	}
	return out, nil
}

// InstanceID finds Orthanc's ID of the instance with SOP Instance UID sop
// (/tools/lookup); "" and no error when it has none.
func (o *Orthanc) InstanceID(sop string) (string, error) {
	b, err := o.Post("/tools/lookup", "text/plain", []byte(sop))
	if err != nil {
		return "", err
	}
	var hits []struct{ ID, Type string }
	if err := json.Unmarshal(b, &hits); err != nil {
		return "", fmt.Errorf("/tools/lookup: %w", err)
	}
	for _, h := range hits {
		if h.Type == "Instance" {
			return h.ID, nil
		}
	}
	return "", nil
}

// InstanceFile returns the Part 10 file Orthanc stored for the instance
// with SOP Instance UID sop.
func (o *Orthanc) InstanceFile(sop string) ([]byte, error) {
	id, err := o.InstanceID(sop)
	if err != nil {
		return nil, err
	}
	if id == "" {
		return nil, fmt.Errorf("Orthanc has no instance with SOP Instance UID %s", sop)
	}
	return o.Get("/instances/" + id + "/file")
}

// QIDOInstances runs a QIDO-RS search for instances (PS3.18 10.6) with
// the given query parameters and returns the matches, DICOM JSON (PS3.18
// F.2) decoded.
func (o *Orthanc) QIDOInstances(query url.Values) ([]map[string]any, error) {
	var out []map[string]any
	err := o.GetJSON("/dicom-web/instances?"+query.Encode(), &out)
	return out, err
}

// DICOMJSONString is the first value of attribute tag ("0020000D") of a
// DICOM JSON object, if it is a string.
func DICOMJSONString(obj map[string]any, tag string) string {
	attr, _ := obj[tag].(map[string]any)
	vals, _ := attr["Value"].([]any)
	if len(vals) == 0 {
		return ""
	}
	s, _ := vals[0].(string)
	return s
}

package main

// qr.go: the query/retrieve case. One Orthanc holds the small set and
// answers DIMSE C-FIND and C-MOVE itself and QIDO-RS and WADO-RS for
// dicomgw in front of it (--qr-destination); the same findscu and movescu
// requests go to both, in the same run: C-FIND latency, and C-MOVE
// throughput of the whole study to a dcmtk storescp.

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
)

// qrMoveTarget: dicomgw's C-MOVE throughput over Orthanc's own, at least.
const qrMoveTarget = 0.8

type qrResult struct {
	Objects        int     `json:"objects"`
	Bytes          int64   `json:"bytes"`
	FindOrthanc    timing  `json:"find_orthanc"`
	FindDicomgw    timing  `json:"find_dicomgw"`
	MoveOrthanc    timing  `json:"move_orthanc"`
	MoveDicomgw    timing  `json:"move_dicomgw"`
	MoveThroughput float64 `json:"move_dicomgw_vs_orthanc_throughput"`
	Target         float64 `json:"target_min"`
	Pass           bool    `json:"pass"`
}

func measureQR(ctx context.Context, c *config, set objectSet) (*qrResult, error) {
	scpDir, err := os.MkdirTemp(c.work, "qr-scp-")
	if err != nil {
		return nil, err
	}
	scp, err := harness.StartStoreSCP(scpDir, "-aet", "BENCHSCP", "-dhl")
	if err != nil {
		return nil, err
	}
	defer scp.Kill()
	o, stop, err := freshOrthanc(c, "qr", map[string]any{"DicomAlwaysAllowFind": true, "DicomAlwaysAllowMove": true,
		"DicomModalities": map[string]any{"scp": []any{"BENCHSCP", "127.0.0.1", scp.Port}}})
	if err != nil {
		return nil, err
	}
	defer stop()
	for _, f := range set.Files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		if _, err := o.Post("/instances", "application/dicom", b); err != nil {
			return nil, fmt.Errorf("loading Orthanc: %w", err)
		}
	}
	var studies []string
	if err := o.GetJSON("/studies", &studies); err != nil || len(studies) != 1 {
		return nil, fmt.Errorf("the Orthanc holds %d studies (%v), want the set's one", len(studies), err)
	}
	var study struct{ MainDicomTags map[string]string }
	if err := o.GetJSON("/studies/"+studies[0], &study); err != nil {
		return nil, err
	}
	studyUID := study.MainDicomTags["StudyInstanceUID"]
	spool, err := os.MkdirTemp(c.work, "qr-spool-")
	if err != nil {
		return nil, err
	}
	g, err := harness.StartBinary(c.bin, spool, "--stow-url", o.BaseURL(), "--qr-destination", "default",
		"--remote-ae", "BENCHSCP="+scp.Addr(), "--spool-min-free", "0")
	if err != nil {
		return nil, err
	}
	defer g.Stop(30 * time.Second)

	r := &qrResult{Objects: len(set.Files), Bytes: set.Bytes, Target: qrMoveTarget}
	one := objectSet{Files: []string{""}}
	find := func(addr, called string) (float64, error) {
		host, port := splitHostPort(addr)
		start := time.Now()
		out, err := exec.CommandContext(ctx, "findscu", "-S", "-aet", "BENCH", "-aec", called, host, port,
			"-k", "QueryRetrieveLevel=SERIES", "-k", "StudyInstanceUID="+studyUID, "-k", "SeriesInstanceUID", "-k", "Modality").CombinedOutput()
		if err != nil || strings.Contains(string(out), "E: ") {
			return 0, fmt.Errorf("findscu to %s: %v\n%s", called, err, out)
		}
		return time.Since(start).Seconds(), nil
	}
	move := func(addr, called string) (float64, error) {
		host, port := splitHostPort(addr)
		files, _ := filepath.Glob(filepath.Join(scpDir, "*"))
		for _, f := range files {
			os.Remove(f)
		}
		start := time.Now()
		out, err := exec.CommandContext(ctx, "movescu", "-S", "-aet", "BENCH", "-aec", called, "-aem", "BENCHSCP", host, port,
			"-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID="+studyUID).CombinedOutput()
		d := time.Since(start).Seconds()
		got, _ := filepath.Glob(filepath.Join(scpDir, "*"))
		if err != nil || len(got) != len(set.Files) {
			return 0, fmt.Errorf("movescu to %s: %v, storescp received %d of %d\n%s", called, err, len(got), len(set.Files), out)
		}
		return d, nil
	}
	var fo, fd, mo, md []float64
	for range 5 * c.runs {
		a, err := find(o.DICOMAddr(), o.AETitle)
		if err != nil {
			return nil, err
		}
		b, err := find(g.Addr, "DICOMGW")
		if err != nil {
			return nil, err
		}
		fo, fd = append(fo, a), append(fd, b)
	}
	for range c.runs {
		a, err := move(o.DICOMAddr(), o.AETitle)
		if err != nil {
			return nil, err
		}
		b, err := move(g.Addr, "DICOMGW")
		if err != nil {
			return nil, err
		}
		mo, md = append(mo, a), append(md, b)
	}
	r.FindOrthanc, r.FindDicomgw = newTiming(fo, one), newTiming(fd, one)
	r.MoveOrthanc, r.MoveDicomgw = newTiming(mo, set), newTiming(md, set)
	r.MoveThroughput = r.MoveOrthanc.Median / r.MoveDicomgw.Median
	r.Pass = r.MoveThroughput >= qrMoveTarget
	return r, nil
}

func splitHostPort(addr string) (string, string) {
	i := strings.LastIndexByte(addr, ':')
	return addr[:i], addr[i+1:]
}

// hugeMoveResult is the huge object moved through dicomgw (C-MOVE from
// Orthanc's WADO-RS to storescp).
type hugeMoveResult struct {
	Bytes          int64   `json:"bytes"`
	Seconds        float64 `json:"seconds"`
	DicomgwPeakRSS int64   `json:"dicomgw_peak_rss_bytes"`
	TargetPeakRSS  int64   `json:"target_peak_rss_bytes"`
	Pass           bool    `json:"pass"`
}

// measureHugeMove loads the huge object into Orthanc (streamed) and moves
// it through a fresh dicomgw to storescp, reading dicomgw's peak RSS.
func measureHugeMove(ctx context.Context, c *config, path string, size int64) (hugeMoveResult, error) {
	r := hugeMoveResult{Bytes: size, TargetPeakRSS: hugeTargetRSS}
	scpDir, err := os.MkdirTemp(c.work, "huge-move-scp-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(scpDir)
	scp, err := harness.StartStoreSCP(scpDir, "-aet", "BENCHSCP", "-dhl")
	if err != nil {
		return r, err
	}
	defer scp.Kill()
	o, stop, err := freshOrthanc(c, "huge-move", nil)
	if err != nil {
		return r, err
	}
	defer stop()
	f, err := os.Open(path)
	if err != nil {
		return r, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.URL()+"/instances", f)
	if err != nil {
		f.Close()
		return r, err
	}
	req.ContentLength = size
	rsp, err := http.DefaultClient.Do(req)
	f.Close()
	if err != nil {
		return r, fmt.Errorf("loading Orthanc: %w", err)
	}
	rsp.Body.Close()
	if rsp.StatusCode != http.StatusOK {
		return r, fmt.Errorf("loading Orthanc: HTTP %d", rsp.StatusCode)
	}
	var studies []string
	if err := o.GetJSON("/studies", &studies); err != nil || len(studies) != 1 {
		return r, fmt.Errorf("the Orthanc holds %d studies (%v)", len(studies), err)
	}
	var study struct{ MainDicomTags map[string]string }
	if err := o.GetJSON("/studies/"+studies[0], &study); err != nil {
		return r, err
	}
	spool, err := os.MkdirTemp(c.work, "huge-move-spool-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(spool)
	g, err := harness.StartBinary(c.bin, spool, "--stow-url", o.BaseURL(), "--qr-destination", "default",
		"--remote-ae", "BENCHSCP="+scp.Addr(), "--spool-min-free", "0")
	if err != nil {
		return r, err
	}
	defer g.Stop(30 * time.Second)
	host, port := splitHostPort(g.Addr)
	start := time.Now()
	out, err := exec.CommandContext(ctx, "movescu", "-S", "-aet", "BENCH", "-aec", "DICOMGW", "-aem", "BENCHSCP", host, port,
		"-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID="+study.MainDicomTags["StudyInstanceUID"]).CombinedOutput()
	r.Seconds = time.Since(start).Seconds()
	got, _ := filepath.Glob(filepath.Join(scpDir, "*"))
	if err != nil || len(got) != 1 {
		return r, fmt.Errorf("movescu: %v, storescp received %d files\n%s", err, len(got), out)
	}
	if r.DicomgwPeakRSS, err = g.PeakRSS(); err != nil {
		return r, err
	}
	r.Pass = r.DicomgwPeakRSS < hugeTargetRSS
	return r, nil
}

package dimse

import (
	"bytes"
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dicomgw/dicomgw/pkg/pdu"
	"github.com/dicomgw/dicomgw/pkg/uid"
)

// TestMetrics: the counters move with what happens on the wire, and
// labels stay bounded (an unknown calling AE is "other").
func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	store := newMemStore()
	ct1, _ := ParseCallingAE(context.Background(), "CT1")
	any1, _ := ParseCallingAE(context.Background(), "TESTSCU")
	srv, err := NewServer(Config{AETitles: []string{"DICOMGW"}, CallingAEs: []CallingAE{ct1, any1}}, store, testLogger(t), reg)
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	}()
	addr := ln.Addr().String()

	c := dial(t, addr)
	c.Echo()
	ds := ctDataSet(ctClass, "1.2.3", 5000)
	c.Store(ctClass, "1.2.3", uid.ExplicitVRLittleEndian, bytes.NewReader(ds))
	store.commitErr = &StatusError{Status: StatusDataSetDoesNotMatchClass}
	c.Store(ctClass, "1.2.3", uid.ExplicitVRLittleEndian, bytes.NewReader(ds))
	if got := testutil.ToFloat64(srv.m.active); got != 1 {
		t.Errorf("active %v during the association", got)
	}
	c.Release()

	_, err = Dial(context.Background(), addr, DialConfig{CallingAE: "STRANGER", CalledAE: "DICOMGW", Contexts: []ProposedContext{ctVerification}, Timeout: 5 * time.Second})
	var rj *RejectedError
	if !errors.As(err, &rj) {
		t.Fatal(err)
	}
	r := dialRaw(t, addr)
	rq := rqFor(pcEcho)
	rq.CallingAE = pdu.MakeAE("CT1")
	r.associate(rq)
	r.send(pdata(cmdPDV(7, echoRQ(1))))
	r.expectAbort(pdu.AbortSourceProvider, pdu.AbortInvalidPDUParameterValue)
	r.c.Close()
	waitIdle(t, srv)

	for _, c := range []struct {
		m    prometheus.Collector
		want float64
	}{
		{srv.m.requests.WithLabelValues("C-ECHO", "0x0000", "TESTSCU"), 1},
		{srv.m.requests.WithLabelValues("C-STORE", "0x0000", "TESTSCU"), 1},
		{srv.m.requests.WithLabelValues("C-STORE", "0xA900", "TESTSCU"), 1},
		{srv.m.ended.WithLabelValues("released"), 1},
		{srv.m.ended.WithLabelValues("rejected"), 1},
		{srv.m.ended.WithLabelValues("protocol-error"), 1},
		{srv.m.rejected.WithLabelValues("calling-AE-title-not-recognized"), 1},
		{srv.m.aborted.WithLabelValues("local", "invalid-PDU-parameter-value"), 1},
		{srv.m.bytes, float64(2 * len(ds))},
		{srv.m.active, 0},
	} {
		if got := testutil.ToFloat64(c.m); got != c.want {
			t.Errorf("%v: %v, want %v", c.m, got, c.want)
		}
	}
	if n := testutil.CollectAndCount(srv.m.storeDur); n != 1 {
		t.Errorf("%d store duration series", n)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

// stgcmt-scu.js: dcmjs-dimse as a Storage Commitment Push Model SCU, for
// dicomgw's conformance tests (conformance/commitment_test.go).
//
// Reads a JSON request from stdin:
//   {"host", "port", "callingAE", "calledAE", "transactionUID",
//    "refs": [{"class", "instance"}], "lingerMs", "listenPort", "waitMs",
//    "tlsCertFile", "tlsKeyFile"}
// sends one N-ACTION (Action Type ID 1) on an association it keeps open for
// lingerMs after the response, and, when listenPort is set, also listens
// there as an SCP for a report on a new association (over DICOM TLS with
// tlsCertFile and tlsKeyFile) until waitMs have passed (or until killed).
// Prints one JSON line per event on stdout:
// {"event":"n-action-rsp","status":N,"comment":...},
// {"event":"association","callingAE","calledAE","roles":{"scu","scp"}} (a
// new association to the listener),
// {"event":"n-event-report","via":"same"|"new","eventTypeId":N,
//  "transactionUID":..., "success":[...], "failed":[{"instance","reason"}]},
// {"event":"association-accepted","accepted":bool} (whether the peer
// accepted the Storage Commitment context: dcmjs-dimse only logs a request
// it cannot send), {"event":"released"}, {"event":"error","message":...}.
'use strict';

const fs = require('fs');
const dimse = require('dcmjs-dimse');
const { Client, Server, Scp, Dataset } = dimse;
const { NActionRequest } = dimse.requests;
const { NEventReportResponse } = dimse.responses;
const { Status, PresentationContextResult, SopClass, TransferSyntax } = dimse.constants;

// dcmjs-dimse logs to stdout: only errors, so that stdout stays JSON lines.
dimse.log.setLevel('error');

const stgcmtClass = '1.2.840.10008.1.20.1';
const stgcmtInstance = '1.2.840.10008.1.20.1.1';

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function seq(v) {
  if (v === undefined || v === null) return [];
  return Array.isArray(v) ? v : [v];
}

function report(via, request, callback) {
  const ds = request.getDataset();
  const el = ds ? ds.getElements() : {};
  out({
    event: 'n-event-report',
    via,
    eventTypeId: request.getEventTypeId(),
    transactionUID: el.TransactionUID,
    success: seq(el.ReferencedSOPSequence).map((i) => i.ReferencedSOPInstanceUID),
    failed: seq(el.FailedSOPSequence).map((i) => ({ instance: i.ReferencedSOPInstanceUID, reason: i.FailureReason })),
  });
  const rsp = NEventReportResponse.fromRequest(request);
  rsp.setStatus(Status.Success);
  callback(rsp);
}

let input = '';
process.stdin.on('data', (d) => (input += d));
process.stdin.on('end', () => {
  const req = JSON.parse(input);

  let server = null;
  if (req.listenPort) {
    class ReportScp extends Scp {
      associationRequested(association) {
        const contexts = association.getPresentationContexts();
        contexts.forEach((c) => {
          const context = association.getPresentationContext(c.id);
          if (context.getAbstractSyntaxUid() === stgcmtClass) {
            const ts = context.getTransferSyntaxUids();
            context.setResult(PresentationContextResult.Accept, ts.includes(TransferSyntax.ExplicitVRLittleEndian) ? TransferSyntax.ExplicitVRLittleEndian : ts[0]);
          } else {
            context.setResult(PresentationContextResult.RejectAbstractSyntaxNotSupported);
          }
        });
        // The SCU/SCP roles the peer proposed for the Storage Commitment
        // context (null when it sent no role selection item).
        const proposed = contexts.map((c) => association.getPresentationContext(c.id)).find((c) => c.getAbstractSyntaxUid() === stgcmtClass);
        const role = (v) => (v === undefined ? null : v);
        out({
          event: 'association',
          callingAE: association.getCallingAeTitle(),
          calledAE: association.getCalledAeTitle(),
          roles: proposed ? { scu: role(proposed.getUserRole()), scp: role(proposed.getProviderRole()) } : null,
        });
        this.sendAssociationAccept();
      }
      nEventReportRequest(request, callback) {
        report('new', request, callback);
      }
      associationReleaseRequested() {
        this.sendAssociationReleaseResponse();
      }
    }
    server = new Server(ReportScp);
    server.on('networkError', (e) => out({ event: 'error', message: 'server: ' + e.message }));
    if (req.tlsCertFile) {
      server.listen(req.listenPort, {
        securityOptions: { cert: fs.readFileSync(req.tlsCertFile), key: fs.readFileSync(req.tlsKeyFile) },
      });
    } else {
      server.listen(req.listenPort);
    }
  }

  const client = new Client();
  const action = new NActionRequest(stgcmtClass, stgcmtInstance, 1);
  action.setDataset(
    new Dataset({
      TransactionUID: req.transactionUID,
      ReferencedSOPSequence: req.refs.map((r) => ({ ReferencedSOPClassUID: r.class, ReferencedSOPInstanceUID: r.instance })),
    })
  );
  action.on('response', (rsp) => out({ event: 'n-action-rsp', status: rsp.getStatus(), comment: rsp.getErrorComment ? rsp.getErrorComment() : undefined }));
  client.addRequest(action);
  client.on('associationAccepted', (association) => {
    const accepted = association
      .getPresentationContexts()
      .some((c) => c.context.getAbstractSyntaxUid() === stgcmtClass && c.context.getResult() === PresentationContextResult.Accept);
    out({ event: 'association-accepted', accepted });
  });
  client.on('nEventReportRequest', (request, callback) => report('same', request, callback));
  client.on('associationRejected', (r) => out({ event: 'error', message: 'association rejected: ' + JSON.stringify(r) }));
  client.on('networkError', (e) => out({ event: 'error', message: 'client: ' + e.message }));
  client.on('closed', () => {
    out({ event: 'released' });
    if (!server) process.exit(0);
  });
  client.send(req.host, req.port, req.callingAE, req.calledAE, { associationLingerTimeout: req.lingerMs || 0 });
  if (server && req.waitMs) {
    setTimeout(() => {
      server.close();
      process.exit(0);
    }, req.waitMs);
  }
});

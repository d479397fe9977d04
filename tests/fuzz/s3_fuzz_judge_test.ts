// The campaign's judge can fail: each kind of wrong answer it exists to catch is caught.

import assert from "node:assert/strict";
import { type Answer, type FuzzCase, judge, type Outcome } from "./s3_fuzz.ts";

const signed: FuzzCase = {
  family: "sigv4-header",
  pieces: [],
  ending: "keep",
  mustAnswer: true,
  method: "PUT",
};

function answer(status: number, body = "", headers: Record<string, string> = {}): Answer {
  return {
    status,
    body,
    headers: new Map(Object.entries({ "x-amz-request-id": "R", ...headers })),
  };
}

function outcome(answers: Answer[], extra: Partial<Outcome> = {}): Outcome {
  return { answers, closed: false, timedOut: false, continued: false, ...extra };
}

const xml = (code: string, message = "m") =>
  `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message></Error>`;

Deno.test("judge() passes S3 errors, successes and HTTP-layer refusals of unparsable requests", () => {
  assert.equal(judge(signed, outcome([answer(403, xml("SignatureDoesNotMatch"))])), null);
  assert.equal(judge(signed, outcome([answer(200)])), null);
  assert.equal(
    judge(signed, outcome([answer(503, xml("SlowDown"), { "retry-after": "1" })])),
    null,
  );
  assert.equal(judge(signed, outcome([answer(507, xml("InsufficientStorage"))])), null);
  // AWS answers an X-Amz-Expires out of range 403, not the code's usual 400.
  const expires = xml("AuthorizationQueryParametersError", "X-Amz-Expires must be at least 1");
  assert.equal(judge(signed, outcome([answer(403, expires)])), null);
  const garbage: FuzzCase = { ...signed, family: "request-line", mustAnswer: false };
  const http400: Answer = { status: 400, body: "", headers: new Map() };
  assert.equal(judge(garbage, outcome([http400])), null);
  assert.equal(judge(garbage, outcome([], { closed: true })), null);
});

Deno.test("judge() fails 500s, bodies that are not S3 errors, unknown codes and wrong statuses", () => {
  assert.match(judge(signed, outcome([answer(500, xml("InternalError"))]))!, /^500/);
  assert.match(judge(signed, outcome([answer(400, "oops")]))!, /without an S3 XML error/);
  assert.match(judge(signed, outcome([answer(400, xml("NoSuchThing"))]))!, /unknown S3 error code/);
  assert.match(judge(signed, outcome([answer(400, xml("AccessDenied"))]))!, /not 403/);
  assert.match(judge(signed, outcome([answer(503, xml("SlowDown"))]))!, /Retry-After/);
  assert.match(judge(signed, outcome([answer(507, xml("SlowDown"))]))!, /not 503/);
  assert.match(judge(signed, outcome([answer(502, xml("InternalError"))]))!, /^502 answered/);
  assert.match(
    judge(signed, outcome([answer(403, xml("AuthorizationQueryParametersError"))]))!,
    /not 400/,
  );
  assert.match(judge(signed, outcome([], { closed: true }))!, /closed without an answer/);
});

Deno.test("judge() fails a hang, and a leftover body read as the next request", () => {
  assert.match(judge(signed, outcome([], { timedOut: true }))!, /hang/);
  const followUp: FuzzCase = { ...signed, family: "keep-alive", followUp: true };
  const refused = answer(403, xml("SignatureDoesNotMatch"));
  assert.match(judge(followUp, outcome([refused], { timedOut: true }))!, /hang/);
  assert.match(
    judge(followUp, outcome([refused, answer(400, xml("MalformedXML"))]))!,
    /after a refused one got 400/,
  );
  assert.equal(judge(followUp, outcome([refused], { closed: true })), null);
  assert.equal(judge(followUp, outcome([refused, answer(200, "x", { etag: '"e"' })])), null);
});

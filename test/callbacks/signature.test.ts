import { createHmac } from 'node:crypto';
import t from 'tap';
import { pythonUrlencode, quotePlus, verifyEnpSignature } from '../../src/callbacks/signature.ts';

// A per-notification callback body, byte for byte as VA Notify would post it.
const body =
  '{"id": "3f5a2b1c-9d4e-4f60-8a7b-1c2d3e4f5a6b", "reference": "0b6f1d2e-3c4a-4b5c-8d6e-7f8091a2b3c4", ' +
  '"to": "veteran+rx@example.com", "status": "delivered", "created_at": "2026-05-14T13:22:08.123456Z", ' +
  '"completed_at": "2026-05-14T13:22:41.654321Z", "sent_at": null, "notification_type": "email", ' +
  '"status_reason": null, "provider": "ses", "provider_payload": null}';

// Written out by hand from the rule: body key order, quote_plus, null as None.
const encoded =
  'id=3f5a2b1c-9d4e-4f60-8a7b-1c2d3e4f5a6b&reference=0b6f1d2e-3c4a-4b5c-8d6e-7f8091a2b3c4' +
  '&to=veteran%2Brx%40example.com&status=delivered&created_at=2026-05-14T13%3A22%3A08.123456Z' +
  '&completed_at=2026-05-14T13%3A22%3A41.654321Z&sent_at=None&notification_type=email' +
  '&status_reason=None&provider=ses&provider_payload=None';

const secret = 'e2b5f1c4-7a3d-4e8b-9c6f-0a1b2c3d4e5f';
const sign = (text: string, key = secret) => createHmac('sha256', key).update(text).digest('hex');

t.test('urlencodes the body as Python does', async (t) => {
  t.equal(pythonUrlencode(body), encoded);
  t.equal(pythonUrlencode(JSON.parse(body) as Record<string, unknown>), encoded, 'an object is taken as its JSON text');
  t.equal(
    pythonUrlencode(
      '{"ok": true, "no": false, "n": 3, "f": 2.50, "big": 1e16, "small": 0.00001, "nested": {"a": "it\'s", "b": [1, null]}}',
    ),
    'ok=True&no=False&n=3&f=2.5&big=1e%2B16&small=1e-05&nested=%7B%27a%27%3A+%22it%27s%22%2C+%27b%27%3A+%5B1%2C+None%5D%7D',
    'booleans, numbers and nested values print as Python prints them',
  );
  t.equal(quotePlus("a b+c/d~e!f*g'h(i)j"), 'a+b%2Bc%2Fd~e%21f%2Ag%27h%28i%29j');
  t.equal(pythonUrlencode('{"b": 1, "a": 2, "b": 3}'), 'b=3&a=2', 'a repeated key keeps its first place and its last value');
  t.throws(() => pythonUrlencode('[1, 2]'));
  t.throws(() => pythonUrlencode('{"a": 1'));
});

t.test('verifies the signature against any accepted secret', async (t) => {
  const signature = sign(encoded);
  t.ok(verifyEnpSignature(body, signature, [secret]));
  t.ok(verifyEnpSignature(body, signature.toUpperCase(), [secret]), 'hex case does not matter');
  t.ok(verifyEnpSignature(body, signature, ['3a9c0d6e-1b2f-4c3d-8e4f-5a6b7c8d9e0f', secret]), 'a rotated-out key still verifies');
  t.notOk(verifyEnpSignature(body, signature, ['3a9c0d6e-1b2f-4c3d-8e4f-5a6b7c8d9e0f']), 'another key does not');
  t.notOk(verifyEnpSignature(body, signature, []), 'no key, no match');
  t.notOk(verifyEnpSignature(body, signature, ['']), 'an empty key never matches');
  t.notOk(verifyEnpSignature(body.replace('delivered', 'permanent-failure'), signature, [secret]), 'a changed body does not');
  t.notOk(verifyEnpSignature(body, signature.slice(0, -1), [secret]), 'a shortened signature does not');
  t.notOk(verifyEnpSignature(body, sign(JSON.stringify(JSON.parse(body))), [secret]), 'a signature over the JSON text does not');
  t.notOk(verifyEnpSignature(body, undefined, [secret]));
  t.notOk(verifyEnpSignature('not json', sign('not json'), [secret]));
});

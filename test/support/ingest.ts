// The shared CMOP samples, how to post them, and how to read the answers.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { internalAuth, type TestApp } from './app.ts';

/** The synthetic CMOP samples in samples/; SAMPLES_DIR runs the tests on another set. */
export const samplesDir = process.env.SAMPLES_DIR ?? fileURLToPath(new URL('../../samples/', import.meta.url));

export interface Sample {
  file: string;
  contentType: string;
}

/** Every sample, each HL7 content type used at least once. */
export const samples: Sample[] = [
  { file: 'rds-r06-batch.hl7', contentType: 'text/plain' },
  { file: 'rds-o13-one-package-two-rx.hl7', contentType: 'application/hl7-v2' },
  { file: 'rrd-o14-vista-encoding-cr.hl7', contentType: 'x-application/hl7-v2+er7' },
  { file: 'dispense-events.json', contentType: 'application/json' },
  { file: 'bad/no-icn.hl7', contentType: 'application/hl7-v2' },
  { file: 'bad/not-hl7.txt', contentType: 'application/hl7-v2' },
  { file: 'bad/truncated.hl7', contentType: 'application/hl7-v2' },
];

export const sampleSsns = ['666001234', '666009876', '666004321'];
export const sampleIcns = ['1098765432V654321', '1055555555V111222', '1012345678V123456', '1000000123V456789', '1011111111V222333'];

export function readSample(file: string): string {
  return readFileSync(`${samplesDir}${file}`, 'utf8');
}

export async function postDispenses(app: TestApp['app'], body: string, contentType: string) {
  return app.inject({ method: 'POST', url: '/v1/dispenses', headers: { ...internalAuth, 'content-type': contentType }, payload: body });
}

export async function postSample(app: TestApp['app'], sample: Sample) {
  return postDispenses(app, readSample(sample.file), sample.contentType);
}

export interface Ack {
  code: string;
  /** MSA-2: the acknowledged message's MSH-10. */
  controlId: string;
  text: string;
  /** MSH-9 of the ACK itself. */
  messageType: string;
}

/** Reads the MSA of every ACK in an HL7 answer, with each ACK's own MSH-1/MSH-2. */
export function readAcks(body: string): Ack[] {
  const acks: Ack[] = [];
  let field = '|';
  let messageType = '';
  for (const segment of body.split('\r').filter((s) => s !== '')) {
    if (segment.startsWith('MSH')) {
      field = segment[3]!;
      messageType = segment.split(field)[8] ?? '';
    } else if (segment.startsWith('MSA')) {
      const [, code = '', controlId = '', text = ''] = segment.split(field);
      acks.push({ code, controlId, text, messageType });
    }
  }
  return acks;
}

// The stock Node clients' own patch calls against a live telemon (tests/api/test_stock_clients.py).
// Usage: node patch.mjs <fhir base url> <patient id>; prints what each client got back, as JSON.
import { Client } from 'fhir-kit-client';
import { MedplumClient } from '@medplum/core';

const [baseUrl, patientId] = process.argv.slice(2);

// fhir-kit-client: client.patch sends its jsonPatch (application/json-patch+json)
const fhirKit = new Client({ baseUrl });
const kitResult = await fhirKit.patch({
  resourceType: 'Patient',
  id: patientId,
  jsonPatch: [{ op: 'replace', path: '/gender', value: 'female' }],
});

// Medplum: patchResource sends a JSON Patch too; the client is pointed at telemon's base
const url = new URL(baseUrl);
const medplum = new MedplumClient({
  baseUrl: `${url.origin}/`,
  fhirUrlPath: url.pathname.replace(/^\//, ''),
  fetch: globalThis.fetch,
});
const medplumResult = await medplum.patchResource('Patient', patientId, [
  { op: 'test', path: '/gender', value: 'female' },
  { op: 'replace', path: '/name/0/family', value: 'Medplum' },
]);

process.stdout.write(JSON.stringify({ fhirKit: kitResult, medplum: medplumResult }));

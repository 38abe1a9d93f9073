// Google's own Node.js metadata client (the npm package gcp-metadata) against the fake metadata
// server named by GCE_METADATA_HOST. Prints one JSON object of what the client read; the Rust
// test `tests/tests/gce_metadata.rs` compares it with what the fake was given.
'use strict';
const gcp = require('gcp-metadata');

async function main() {
  const out = {};
  out.available = await gcp.isAvailable();
  out.id = String(await gcp.instance('id'));
  out.name = await gcp.instance('name');
  out.zone = await gcp.instance('zone');
  out.project = await gcp.project('project-id');
  out.assignments = await gcp.instance({property: 'attributes/snapscan-assignments'});
  out.disks = await gcp.instance({property: 'disks/', params: {recursive: 'true'}});
  const [name, projectId] = Object.values(await gcp.bulk([
    {metadataKey: 'instance/name'},
    {metadataKey: 'project/project-id'},
  ]));
  out.bulk = [name, projectId];
  // A watch as the agent makes it: last_etag=0 answers at once.
  out.watched = await gcp.instance({
    property: 'attributes/',
    params: {recursive: 'true', wait_for_change: 'true', last_etag: '0', timeout_sec: '1'},
  });
  try {
    await gcp.instance('attributes/absent-key');
    out.absent = 'found';
  } catch (e) {
    out.absent = String((e.response && e.response.status) || e.status || e.message);
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e) => {
  process.stderr.write(`gcp-metadata failed: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});

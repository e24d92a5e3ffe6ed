// Drives `tollgate serve` with the official TypeScript SDK client, as a
// TypeScript MCP host would: tools, logging, progress, resources and a
// resource subscription, at one protocol version.
//
//   node interop-ts.cjs <node_modules> <version> http <url>
//   node interop-ts.cjs <node_modules> <version> stdio <command> [args...]
//
// It prints "APPROVE <approval id>" when a registration waits for a human
// (the Go test approves it with the tollgate CLI, from another process) and
// finally "RESULT <json>" with what it saw. Any failure exits non-zero.
'use strict';

const path = require('node:path');
const [modules, version, transportName, target, ...rest] = process.argv.slice(2);
const sdk = (p) => require(path.join(modules, '@modelcontextprotocol/sdk/dist/cjs', p));
const { Client } = sdk('client/index.js');
const { StreamableHTTPClientTransport } = sdk('client/streamableHttp.js');
const { StdioClientTransport } = sdk('client/stdio.js');
const types = sdk('types.js');

function fail(msg) {
  console.error('FAIL ' + msg);
  process.exit(1);
}

function waitFor(what, cond, ms = 60000) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const tick = () => {
      const v = cond();
      if (v) return resolve(v);
      if (Date.now() - started > ms) return reject(new Error('timed out waiting for ' + what));
      setTimeout(tick, 50);
    };
    tick();
  });
}

async function main() {
  const transport = transportName === 'http'
    ? new StreamableHTTPClientTransport(new URL(target))
    : new StdioClientTransport({ command: target, args: rest, env: process.env, stderr: 'inherit' });

  // Ask for the version under test, and note the one the server answers.
  let negotiated = '';
  const send = transport.send.bind(transport);
  transport.send = (message, options) => {
    if (message.method === 'initialize') message.params.protocolVersion = version;
    return send(message, options);
  };
  const start = transport.start.bind(transport);
  transport.start = async () => {
    const onmessage = transport.onmessage;
    transport.onmessage = (message, extra) => {
      if (message.result && message.result.protocolVersion) negotiated = message.result.protocolVersion;
      onmessage(message, extra);
    };
    return start();
  };

  const client = new Client({ name: 'tollgate-interop-ts', version: '1.0.0' });
  const messages = [];
  const updates = [];
  client.setNotificationHandler(types.LoggingMessageNotificationSchema, (n) => messages.push(n.params));
  client.setNotificationHandler(types.ResourceUpdatedNotificationSchema, (n) => updates.push(n.params.uri));
  await client.connect(transport);
  const caps = client.getServerCapabilities();
  if (!caps.logging || !caps.resources || !caps.resources.subscribe) fail('capabilities ' + JSON.stringify(caps));

  const tools = (await client.listTools()).tools.map((t) => t.name).sort();
  await client.setLoggingLevel('info');

  // A policy denial arrives as a notifications/message with the reason.
  const denied = await client.callTool({ name: 'register_domain', arguments: { domain: `ts-${transportName}.xyz`, reason: 'checking what the policy says from TypeScript' } });
  if (!denied.isError) fail('register .xyz was not refused');
  await waitFor('the policy_denied message', () => messages.find((m) => m.data && m.data.event === 'policy_denied'));

  // Progress: strictly increasing, and the result links to its operation.
  const progress = [];
  const deployed = await client.callTool(
    { name: 'deploy_worker', arguments: { script_name: `web-ts-${transportName}`, module: "export default { async fetch() { return new Response('ts') } }", environment: 'preview', reason: 'a preview from the TypeScript client' } },
    undefined,
    { onprogress: (p) => progress.push(p.progress) },
  );
  if (deployed.isError || deployed.structuredContent.status !== 'succeeded') fail('deploy ' + JSON.stringify(deployed));
  for (let i = 1; i < progress.length; i++) if (progress[i] <= progress[i - 1]) fail('progress not increasing: ' + progress);
  const deployLink = deployed.content.find((c) => c.type === 'resource_link');

  const resources = (await client.listResources()).resources.map((r) => r.uri).sort();
  const templates = (await client.listResourceTemplates()).resourceTemplates.map((r) => r.uriTemplate);
  const policies = (await client.readResource({ uri: 'tollgate://policies' })).contents[0];
  const spend = JSON.parse((await client.readResource({ uri: 'tollgate://spend' })).contents[0].text);

  // A registration waits for a human; subscribed, the client hears of the
  // approval made by another process and of the execution.
  const reg = await client.callTool({ name: 'register_domain', arguments: { domain: `ts-${transportName}-${version}.dev`, reason: 'a launch page registered from TypeScript' } });
  const link = reg.content.find((c) => c.type === 'resource_link');
  if (!link || reg.structuredContent.status !== 'awaiting_approval') fail('register ' + JSON.stringify(reg));
  await client.subscribeResource({ uri: link.uri });
  // The approval_requested message names the approval to vote on.
  const opID = reg.structuredContent.operation_id;
  const requested = await waitFor('the approval_requested message', () => messages.find((m) => m.data && m.data.event === 'approval_requested' && m.data.operation_id === opID));
  console.log('APPROVE ' + requested.data.code);
  // Each update is answered with a read, until the operation has succeeded.
  let final = '';
  let read = 0;
  const started = Date.now();
  while (final !== 'succeeded') {
    if (Date.now() - started > 60000) fail('no update showed the operation succeeded; last read ' + final);
    if (updates.filter((u) => u === link.uri).length > read) {
      read++;
      final = JSON.parse((await client.readResource({ uri: link.uri })).contents[0].text).status;
      continue;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  await waitFor('the approval message', () => messages.find((m) => m.data && m.data.event === 'approval_approved'));
  await client.unsubscribeResource({ uri: link.uri });

  console.log('RESULT ' + JSON.stringify({
    negotiated, tools, progress, deployLink: deployLink && deployLink.uri, resources, templates,
    policiesMime: policies.mimeType, policiesHasTLDs: policies.text.includes('.dev, .app, .com'),
    spendAgent: spend.agent, updates: updates.filter((u) => u === link.uri).length, final,
    events: messages.map((m) => m.data.event),
  }));
  await client.close();
}

main().catch((e) => fail(e && e.stack ? e.stack : String(e)));

// A screenshot of TensorBoard's HParams dashboard (the parallel coordinates view) of a
// weight-decay sweep, in headless Chromium, driven by playwright-core: the columns that do not
// vary hidden; impl, optimizer, λ, ‖w‖ and the test loss shown (λ by quantile, the loss on a
// log axis). Run by scripts/hparams-screenshot.sh, which starts TensorBoard:
//
//   node scripts/hparams-screenshot.js <tensorboard url> <out.png>
const { chromium } = require('playwright-core');
(async () => {
  const [url, out] = process.argv.slice(2);
  const view = 'PARALLEL COORDINATES VIEW';
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
  const page = await browser.newPage({ viewport: { width: 1600, height: 960 } });
  await page.goto(url);
  await page.getByText('Trial ID').waitFor({ timeout: 60000 });
  const hide = ['batch_size', 'engine', 'epochs', 'lr', 'n_test', 'n_train', 'n_val', 'num_inputs', 'penalty',
    'noise', 'final/w_l1', 'final/w_small', 'final/train_loss', 'final/gap', 'final/val_loss', 'seed'];
  for (const name of hide) {
    const box = page.getByRole('checkbox', { name, exact: true });
    if (await box.count() > 0 && await box.first().isChecked()) await box.first().uncheck();
  }
  for (const name of ['impl', 'optimizer', 'wd', 'final/w_norm', 'final/test_loss']) {
    const box = page.getByRole('checkbox', { name, exact: true });
    if (await box.count() > 0 && !(await box.first().isChecked())) await box.first().check();
  }
  await page.getByText(view).click();
  await page.waitForTimeout(2000);
  // λ spans 0..100: its axis by quantile; the test loss spans 0.01..180: logarithmic.
  await page.getByRole('radio', { name: 'Quantile' }).nth(0).check();
  await page.getByRole('radio', { name: 'Logarithmic' }).nth(2).check();
  await page.waitForTimeout(3000);
  await page.screenshot({ path: out });
  await browser.close();
})().catch(e => { console.error(e); process.exit(1); });

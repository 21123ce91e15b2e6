// Placeholder until the plugin build lands.
console.log('plugins: nothing to build yet');

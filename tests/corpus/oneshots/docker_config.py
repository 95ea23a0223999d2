SECRET = 'x'
